"""The suite's errors: one tree, each with a hint that tells the user what to do next.

    OpsError
    ├── ConfigError            a setting is missing or invalid
    │   └── FileError          a file the user wrote cannot be read or decoded
    ├── ImageError             building or shipping the image
    │   ├── EngineUnavailable  the Docker engine cannot be reached
    │   ├── BuildError         a build step failed
    │   ├── RegistryError      the registry is unreachable or refused the login
    │   └── PushError          a push failed (including errors inside the push stream)
    ├── ClusterError           talking to Kubernetes
    │   ├── ContextError       the kube context is unknown or not allowed
    │   ├── NotFound           an object does not exist
    │   ├── RolloutFailed      a rollout did not complete
    │   │   └── RolloutTimeout it did not complete in time
    │   └── ExecFailed         a command run in a pod failed
    ├── SecretsError           local secret files or cluster Secrets
    └── BackupError            dumps, restores and their files
        ├── DumpFailed         pg_dump did not produce a complete dump
        ├── RestoreFailed      the restore did not apply (the database is unchanged)
        │   ├── ServerKilled   the server process died under it (most likely out of memory)
        │   └── RestoreInterrupted  stopped (Ctrl-C) before its commit
        ├── WrongDatabase      the backup is of another database than the one named
        ├── CorruptBackup      a backup file is missing, truncated, foreign or altered
        └── BackupKeyError     the age key to encrypt or decrypt a backup is missing or wrong

Library errors (docker, kubernetes, psycopg) are converted where they are caught, with
``raise X(...) from exc``; tasks turn any ``OpsError`` into one red line and an exit code.
"""

from __future__ import annotations


class OpsError(Exception):
    """Base of every error the suite reports to its user."""

    default_hint: str = "Run with --debug for the full traceback."
    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None, **context: object) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint or self.default_hint
        self.context: dict[str, object] = {k: v for k, v in context.items() if v is not None}

    def __str__(self) -> str:
        return self.message


class ConfigError(OpsError):
    """A setting is missing or invalid."""

    exit_code = 2
    default_hint = "Run `inv config` to see every setting and where it came from."


class FileError(ConfigError):
    """A local file the user wrote (secrets/, .env) cannot be read, or is not text we read."""

    default_hint = "Save it as UTF-8 text."


class ImageError(OpsError):
    """Building, tagging or shipping the image failed."""


class EngineUnavailable(ImageError):
    """The Docker engine cannot be reached."""

    default_hint = (
        "Start Docker (Docker Desktop, or `dockerd`), or point DOCKER_HOST at a running engine."
    )


class BuildError(ImageError):
    """A build step failed; the message carries that step's output."""

    default_hint = "Fix the failing step in the Dockerfile and run the build again."


class RegistryError(ImageError):
    """The registry is unreachable or refused the credentials."""

    default_hint = (
        "Check that the registry is running and that MANIFEST_REGISTRY_USERNAME / "
        "MANIFEST_REGISTRY_PASSWORD (or secrets/registry_*.txt) are right."
    )


class PushError(ImageError):
    """A push failed, including failures the engine reports inside a 200 response stream."""

    default_hint = "Check the registry credentials and that the registry is reachable."


class ClusterError(OpsError):
    """Talking to the Kubernetes API failed."""

    default_hint = "Check the kube context with `inv doctor`."


class ContextError(ClusterError):
    """The kube context is unknown, or not on the allow-list."""

    exit_code = 2
    default_hint = (
        "Name the context explicitly with --context NAME, or add it to MANIFEST_ALLOWED_CONTEXTS."
    )


class NotFound(ClusterError):
    """A Kubernetes object does not exist."""

    default_hint = "Run `inv deploy` to create it from k8s/, or check --namespace and its name."


class RolloutFailed(ClusterError):
    """A rollout did not complete."""

    default_hint = "Look at the reasons above; `--undo-on-failure` rolls back automatically."


class RolloutTimeout(RolloutFailed):
    """A rollout did not complete before the timeout."""

    default_hint = "Raise --timeout if the rollout is just slow, or look at the reasons above."


class ExecFailed(ClusterError):
    """A command run in a pod exited non-zero, or its exit status was lost."""

    default_hint = "Read the remote error above; the pod's logs may say more."


class SecretsError(OpsError):
    """Local secret files or cluster Secrets are missing or invalid."""

    default_hint = "Run `inv secrets.init`, fill in secrets/, then `inv secrets.check`."


class BackupError(OpsError):
    """A backup or restore failed."""


class DumpFailed(BackupError):
    """pg_dump did not produce a complete dump; nothing was kept."""

    default_hint = "Read pg_dump's error above; no partial file was kept."


class RestoreFailed(BackupError):
    """A restore did not apply; it ran in one transaction, so the database is unchanged."""

    default_hint = (
        "The database was left as it was. The error above is PostgreSQL's: it names the "
        "statement that failed."
    )


class ServerKilled(RestoreFailed):
    """The PostgreSQL server process died during a restore (most likely out of memory)."""

    default_hint = (
        "Give PostgreSQL more memory: raise resources.limits.memory of the postgres "
        "container (k8s/base/postgres-statefulset.yaml, or your overlay) and apply it; "
        "`kubectl describe pod postgres-0` and the server log say what killed it."
    )


class RestoreInterrupted(RestoreFailed):
    """A restore was stopped (Ctrl-C) before its transaction committed."""

    exit_code = 130
    default_hint = "Nothing was changed; run the restore again when you are ready."


class WrongDatabase(BackupError):
    """The backup is of another database than the one it would be restored into."""

    exit_code = 2
    default_hint = "Restore it into the database it came from, or name its source explicitly."


class CorruptBackup(BackupError):
    """A backup file is missing, truncated, of another format, or altered."""

    exit_code = 3
    default_hint = "Use another backup (`inv backup.list`), or run `inv backup.verify FILE`."


class BackupKeyError(BackupError):
    """The age key to encrypt or decrypt a backup is missing, unreadable or not the right one."""

    exit_code = 2
    default_hint = (
        "Set MANIFEST_BACKUP_IDENTITY_FILE (or secrets/backup_identity.txt) to the private key "
        "made by `inv backup.keygen`."
    )


def local_file_error(exc: OSError) -> OpsError:
    """An OSError about a local file or folder as one line naming it (the suite's boundary
    with the local file system; see ``ops.tasks.common.ops_task``)."""
    names = " → ".join(str(n) for n in (exc.filename, exc.filename2) if n is not None)
    reason = exc.strerror or type(exc).__name__
    hints = {
        "FileExistsError": "Something else already has that name: pick another path.",
        "NotADirectoryError": "A file stands where a folder is needed: pick another path.",
        "IsADirectoryError": "A folder stands where a file is needed: name the file.",
        "PermissionError": "Check the permissions of the file and the folders above it.",
        "FileNotFoundError": "Check the path.",
    }
    return OpsError(
        f"cannot use {names}: {reason}",
        hint=hints.get(type(exc).__name__, "Check the path, free disk space and permissions."),
    )
