"""Which age keys the backups use, from the settings: recipients to encrypt to, the
identity that decrypts, and ``backup.keygen``'s key pair.

Recipients are public (the ``backup_recipients`` setting, or ``secrets/backup_recipients.txt``
one per line; they may also live in the daemon's ConfigMap). The identity is private: a
file on the operator's machine (``backup_identity_file``, else
``secrets/backup_identity.txt``) that is never sent to the cluster and never printed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ops import agecrypt
from ops.config import Settings, env_var
from ops.errors import BackupKeyError, ConfigError
from ops.plan import Plan, items

IDENTITY_FILE = "backup_identity.txt"
RECIPIENTS_FILE = "backup_recipients.txt"


def recipients(settings: Settings) -> list[str]:
    """The validated recipients (empty: backups are not encrypted)."""
    source = {
        "secrets/": f"{settings.secrets_dir / RECIPIENTS_FILE}",
        "environment": env_var("backup_recipients"),
        ".env": f"{env_var('backup_recipients')} in .env",
    }.get(settings.source_of("backup_recipients"), "backup_recipients")
    return agecrypt.check_recipients(settings.backup_recipients, source=source)


def identity_path(settings: Settings) -> Path:
    return settings.backup_identity_file or settings.secrets_dir / IDENTITY_FILE


def identities(settings: Settings, *, file: str = "the backup") -> list[Any]:
    """The identities that open encrypted backups; BackupKeyError (before anything is
    touched) if there is none."""
    path = identity_path(settings)
    if settings.backup_identity_file is None and not path.is_file():
        raise BackupKeyError(
            f"{file} is encrypted and no identity is configured to open it",
            hint=f"Set {env_var('backup_identity_file')} to your private key file, or put it "
            f"at {path} (made by `inv backup.keygen`).",
        )
    return agecrypt.read_identities(path)


def identities_if_any(settings: Settings) -> list[Any] | None:
    """The identities if one is configured (None if not); a configured one that cannot be
    read is an error."""
    if settings.backup_identity_file is None and not identity_path(settings).is_file():
        return None
    return agecrypt.read_identities(identity_path(settings))


def identities_for(settings: Settings, path: Path) -> list[Any] | None:
    """The identities to open ``path`` with if it is encrypted (BackupKeyError if none is
    configured), else None."""
    if path.is_file() and agecrypt.file_is_encrypted(path):
        return identities(settings, file=str(path))
    return None


RECIPIENTS_ELSEWHERE = (
    "backup_recipients is set elsewhere (environment or .env): add the public key there"
)


@dataclass(frozen=True, kw_only=True)
class KeygenWork:
    """Where ``backup.keygen`` writes the key pair."""

    identity_file: Path
    recipients_file: Path | None  # None: the recipients come from elsewhere (env, .env, flag)


def keygen_plan(settings: Settings, identity_file: Path | None = None) -> Plan[KeygenWork]:
    """backup.keygen's plan: the files it writes; refuses to replace an existing identity.
    Its warning: the recipients come from elsewhere, so the public key must be added there."""
    target = identity_file or identity_path(settings)
    if target.exists():
        raise ConfigError(
            f"{target} already exists; backup.keygen never replaces a key",
            hint="Backups encrypted to it would become unreadable. Choose another path with "
            "--identity-file, or move the old key away yourself (keep a copy!).",
        )
    from_file = settings.source_of("backup_recipients") in ("default", "secrets/")
    recipients_file = settings.secrets_dir / RECIPIENTS_FILE if from_file else None
    lines = [(str(target), "write the private key (mode 0600)")]
    if recipients_file is not None:
        lines.append((str(recipients_file), "add its public key (backups encrypt to it)"))
    return Plan(
        title="backup.keygen",
        items=items(*lines),
        warnings=() if from_file else (RECIPIENTS_ELSEWHERE,),
        work=KeygenWork(identity_file=target, recipients_file=recipients_file),
    )


def keygen(plan: Plan[KeygenWork]) -> agecrypt.KeyPair:
    """Carry out backup.keygen's plan: the identity file (mode 0600) and, where the
    recipients come from ``secrets/``, its public key appended to the recipients file."""
    work = plan.work
    pair = agecrypt.generate()
    agecrypt.write_identity_file(work.identity_file, pair)
    if work.recipients_file is not None:
        path = work.recipients_file
        path.parent.mkdir(parents=True, exist_ok=True)
        existing = path.read_text(encoding="utf-8") if path.exists() else ""
        sep = "" if not existing or existing.endswith("\n") else "\n"
        with path.open("a", encoding="utf-8") as f:
            f.write(f"{sep}{pair.recipient}\n")
    return pair
