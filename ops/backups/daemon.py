"""The backup daemon's volume: list, upload to, prune and fetch from it, checked by sha256."""

from __future__ import annotations

import fnmatch
import re
import secrets
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from ops import agecrypt
from ops.backups.dump import Source
from ops.backups.files import (
    AGE_SUFFIX,
    BackupInfo,
    HashingWriter,
    ListedBackup,
    ProgressFactory,
    create_private,
    format_from_name,
    no_progress,
    private_dir,
    publish,
    sha256_of,
    sidecar_of,
)
from ops.errors import BackupError, CorruptBackup, ExecFailed
from ops.execstream import CommandRunner
from ops.pgformat import DumpHeader, read_header

DAEMON_DIR = "/backups"


_LIST_DAEMON = (
    'cd "$0" || exit 1; for f in *.sql *.dump *.sql.age *.dump.age; do [ -f "$f" ] || continue; '
    's=missing; [ -f "$f.sha256" ] && { if sha256sum -c "$f.sha256" >/dev/null 2>&1; '
    "then s=ok; else s=BAD; fi; }; "
    'printf "%s|%s|%s|%s\\n" "$f" "$(wc -c < "$f")" "$(date -r "$f" +%s)" "$s"; done'
)
_LIST_DAEMON_FAST = _LIST_DAEMON.replace(
    'if sha256sum -c "$f.sha256" >/dev/null 2>&1; then s=ok; else s=BAD; fi;', "s=sidecar;"
)


def list_daemon(
    runner: CommandRunner, *, check: bool = False, directory: str = DAEMON_DIR
) -> list[ListedBackup]:
    """Backups in the daemon's volume; ``check`` re-hashes each one in the pod."""
    script = _LIST_DAEMON if check else _LIST_DAEMON_FAST
    result = runner.run(["sh", "-c", script, directory])
    found = []
    for line in result.stdout.decode("utf-8", errors="replace").splitlines():
        parts = line.split("|")
        if len(parts) != 4:
            continue
        name, size, mtime, status = parts
        found.append(
            ListedBackup(
                name=name,
                where="daemon",
                size=int(size),
                modified=datetime.fromtimestamp(int(mtime), UTC),
                format=format_from_name(Path(name))
                + (", age" if name.endswith(AGE_SUFFIX) else ""),
                verified={
                    "ok": "sha256 ok",
                    "BAD": "SHA256 MISMATCH",
                    "missing": "no sidecar",
                    "sidecar": "sidecar",
                }.get(status, status),
            )
        )
    return found


# --- the daemon's volume ---------------------------------------------------------------

# The daemon's own dumps, as backup.sh's retention matches them: only these are pruned.
DAEMON_OWN = "continuous-[0-9]*-[0-9]*.sql"

# $1 name, $2 size, $3 sha256, $4 the dump's time (touch -t, UTC). Self-cleaning: whatever
# happens, no .part stays behind, and `ln` (atomic, fails if the name exists) means an
# existing backup is never replaced.
_RECEIVE = r"""
dir="$0"; name="$1"; size="$2"; sum="$3"; stamp="${4:-}"
part="$dir/.$name.$$.part"; final="$dir/$name"; tmpsum="$dir/.$name.$$.sha256.part"
trap 'rm -f "$part" "$tmpsum"' EXIT
trap 'exit 130' INT TERM HUP
if [ -e "$final" ]; then echo "$final already exists in the daemon's volume" >&2; exit 17; fi
head -c "$size" > "$part" || exit 1
got=$(wc -c < "$part")
if [ "$got" -ne "$size" ]; then echo "received $got of $size bytes" >&2; exit 1; fi
set -- $(sha256sum "$part")
if [ "$1" != "$sum" ]; then echo "sha256 in the pod is $1, expected $sum" >&2; exit 1; fi
printf '%s  %s\n' "$sum" "$name" > "$tmpsum" || exit 1
if [ -n "$stamp" ]; then TZ=UTC0 touch -t "$stamp" "$part" "$tmpsum" || exit 1; fi
if ! ln "$part" "$final" 2>/dev/null; then echo "$final already exists" >&2; exit 17; fi
mv "$tmpsum" "$final.sha256"
echo "$sum"
"""


def send_to_daemon(
    path: Path,
    runner: CommandRunner,
    *,
    name: str | None = None,
    created: datetime | None = None,
    progress: ProgressFactory = no_progress,
    directory: str = DAEMON_DIR,
) -> str:
    """Stream a local backup into the daemon's ``/backups`` and check its sha256 in the pod.

    ``created`` (the dump's time) becomes the copy's modification time there, so the daemon
    lists it by when it was dumped, not when it was uploaded. Returns the sha256 the pod
    computed (equal to the local one, or this raised).
    """
    name = name or path.name
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name.startswith("."):
        raise BackupError(f"{name!r} is not a usable backup file name")
    if any(fnmatch.fnmatchcase(name, own) for own in (DAEMON_OWN, DAEMON_OWN + AGE_SUFFIX)):
        raise BackupError(
            f"{name} looks like one of the daemon's own dumps, which its retention prunes",
            hint="Upload it under another name with --name (uploads are kept until "
            "`inv backup.prune` deletes them).",
        )
    stamp = created.astimezone(UTC).strftime("%Y%m%d%H%M.%S") if created else ""
    size = path.stat().st_size
    with progress(f"sha256 {path.name}", size) as advance:
        digest = sha256_of(path, advance)
    with path.open("rb") as f, progress(f"upload {name}", size) as advance:
        try:
            result = runner.run(
                ["sh", "-c", _RECEIVE, directory, name, str(size), digest, stamp],
                stdin=f,
                stdin_size=size,
                progress=advance,
            )
        except ExecFailed as exc:
            if "already exists" in exc.message:
                raise BackupError(
                    f"{name} already exists in the daemon's volume; nothing was overwritten",
                    hint="Pick another name with --name.",
                ) from exc
            raise BackupError(f"upload of {name} failed: {exc.message}") from exc
    remote = result.stdout.decode().strip()
    if remote != digest:
        raise CorruptBackup(f"the pod reports sha256 {remote!r}, expected {digest}")
    return remote


@dataclass(frozen=True, kw_only=True)
class DeletePlan:
    """Backups in the daemon's volume that ``delete_from_daemon`` will remove."""

    where: str
    backups: tuple[ListedBackup, ...]


def plan_delete(
    runner: CommandRunner, names: Sequence[str], *, directory: str = DAEMON_DIR
) -> DeletePlan:
    """Look up every named backup in the daemon's volume; a missing one is an error."""
    if not names:
        raise BackupError(
            "name the daemon backups to delete: --name NAME (repeatable)",
            hint="`inv backup.list` shows them.",
        )
    listed = {b.name: b for b in list_daemon(runner, directory=directory)}
    missing = [n for n in names if n not in listed]
    if missing:
        raise BackupError(
            f"not in the daemon's {directory}: {', '.join(missing)}; nothing was deleted",
            hint="`inv backup.list` shows the daemon's backups.",
        )
    return DeletePlan(where=runner.where, backups=tuple(listed[n] for n in dict.fromkeys(names)))


def delete_from_daemon(
    runner: CommandRunner, plan: DeletePlan, *, directory: str = DAEMON_DIR
) -> list[str]:
    """Delete the planned backups and their sidecars from the daemon's volume."""
    names = [b.name for b in plan.backups]
    runner.run(
        [
            "sh",
            "-c",
            'cd "$0" || exit 1; for f; do rm -f -- "$f" "$f.sha256" || exit 1; done',
            directory,
            *names,
        ]
    )
    return names


def prune_daemon(runner: CommandRunner) -> str:
    """Apply the daemon's own retention (``sh /scripts/backup.sh prune``)."""
    result = runner.run(["sh", "/scripts/backup.sh", "prune"])
    return result.stdout.decode("utf-8", errors="replace").strip()


_SEND = r"""
cd "$0" || exit 1
[ -f "$1" ] || { echo "$1 is not in $0" >&2; exit 2; }
[ -f "$1.sha256" ] || { echo "$1 has no $1.sha256 sidecar" >&2; exit 3; }
sha256sum -c "$1.sha256" >&2 || exit 4
exec cat "$1"
"""


def fetch_from_daemon(
    name: str,
    runner: CommandRunner,
    *,
    backups_dir: Path,
    source: Source,
    progress: ProgressFactory = no_progress,
    directory: str = DAEMON_DIR,
) -> Path:
    """Copy a daemon backup into ``backups_dir`` (checked in the pod, then again here)."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise BackupError(f"{name!r} is not a backup file name")
    expected = runner.run(
        ["sh", "-c", 'cat "$0/$1.sha256" && date -r "$0/$1" +%s', directory, name], check=False
    )
    if expected.returncode != 0:
        raise CorruptBackup(f"{name} (or its .sha256 sidecar) is not in the daemon's volume")
    words = expected.stdout.decode().split()
    digest_expected = words[0] if words else ""
    # The daemon's copy is dated when it was dumped (its own, or an upload's, see above).
    created = datetime.fromtimestamp(int(words[-1]), UTC) if words[-1:] else datetime.now(UTC)
    private_dir(backups_dir)
    part = backups_dir / f"{name}.{secrets.token_hex(4)}.part"
    try:
        with create_private(part) as f, progress(f"download {name}", None) as advance:
            writer = HashingWriter(f)
            try:
                runner.run(
                    ["sh", "-c", _SEND, directory, name],
                    stdout=writer,  # type: ignore[arg-type]
                    progress=advance,
                )
            except ExecFailed as exc:
                raise CorruptBackup(f"cannot read {name} from the daemon: {exc.message}") from exc
        if writer.digest.hexdigest() != digest_expected:
            raise CorruptBackup(f"{name}: the download's sha256 differs from the daemon's sidecar")
        encrypted = agecrypt.is_encrypted(bytes(writer.head))
        # An encrypted dump is opened only when it is restored (decrypted on the way).
        header = (
            DumpHeader(format=format_from_name(Path(name)))
            if encrypted
            else read_header(bytes(writer.head), name=name)
        )
        info = BackupInfo(
            file=name,
            sha256=digest_expected,
            size=writer.size,
            database=header.database or source.database,
            format=header.format,
            compression=header.compression or "none",
            server_version=header.server_version,
            source_context=source.context,
            source_namespace=source.namespace,
            source_pod=f"{runner.where} {directory}/{name}",
            created=created.isoformat(timespec="seconds"),
            encryption="age" if encrypted else "none",
        )
        final = publish(part, backups_dir, name)
        info = BackupInfo(**{**asdict(info), "file": final.name})
        info.write(sidecar_of(final))
        return final
    finally:
        part.unlink(missing_ok=True)
