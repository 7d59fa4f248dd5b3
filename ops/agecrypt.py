"""age encryption for backups, streaming in both directions with bounded memory.

The format is age v1 (https://age-encryption.org/v1), so a backup can also be opened with
the ``age``/``rage`` command-line tools: ``age -d -i key.txt FILE > dump``. The library is
``pyrage`` (bindings to rage, the Rust implementation): age-compatible by construction,
wheels for Linux, macOS and Windows, no hand-written cryptography here.

pyrage streams only as a pump, ``encrypt_io(reader, writer)``/``decrypt_io(reader, writer)``,
which pulls 8 KiB reads and pushes 64 KiB age chunks, holding the GIL while it works. Our
streams go the other way round (the exec layer *pushes* a dump into a writer; a restore
*pulls* its stdin from a reader). Both run in a child process between two pipes, so that
the cryptography has a core of its own beside the exec stream's reader: decryption is
pyrage in ``python -m ops.agepump``; encryption is the ``age`` CLI where one is installed
(a fifth of pyrage's CPU; see ``encrypt_command``), else the same pyrage child. Memory stays
at a few chunks, and a failure on either side surfaces on ours (a decryption error is
raised by ``read``, never seen as an early end of the stream).

Keys: recipients are public (``age1...`` or an ``ssh-ed25519``/``ssh-rsa`` public key),
identities are private key files in age-keygen's format (or an OpenSSH private key).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Protocol

from ops import textfiles
from ops.errors import BackupKeyError, ConfigError, CorruptBackup

try:
    import fcntl
except ImportError:  # Windows: its pipes keep their default size
    fcntl = None  # type: ignore[assignment]

MAGIC = b"age-encryption.org/v1\n"
_GATHER = 256 * 1024  # bytes per hand-off between the threads
_DEPTH = 8  # chunks in flight between the threads: 2 MiB of 256 KiB writes at most


class _Sink(Protocol):
    def write(self, data: bytes, /) -> int: ...


# --- keys ------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class KeyPair:
    """A new identity (secret: never print it) and its public recipient."""

    identity: str
    recipient: str


@dataclass(frozen=True)
class Identity:
    """A private key as pyrage's object, and the text it was read from (to hand to the
    decrypting child process; secret: never shown, hence no repr)."""

    key: Any
    text: str = field(repr=False)


def generate() -> KeyPair:
    import pyrage

    ident = pyrage.x25519.Identity.generate()
    return KeyPair(identity=str(ident), recipient=str(ident.to_public()))


def parse_recipient(text: str, *, source: str = "recipients") -> Any:
    """One public key as pyrage's recipient object; ConfigError naming ``source`` if bad."""
    import pyrage

    key = text.strip()
    try:
        if key.startswith("age1"):
            return pyrage.x25519.Recipient.from_str(key)
        if key.startswith("ssh-"):
            return pyrage.ssh.Recipient.from_str(key)
    except pyrage.RecipientError:
        pass
    shown = key if len(key) <= 80 else key[:77] + "..."
    raise ConfigError(
        f"{source}: {shown!r} is not an age public key (age1...) or an ssh-ed25519/ssh-rsa key",
        hint="Use the 'public key:' line that `inv backup.keygen` printed.",
    )


def check_recipients(recipients: Iterable[str], *, source: str = "recipients") -> list[str]:
    """The recipients, stripped and validated (each one parses), in order, without repeats."""
    seen: list[str] = []
    for r in recipients:
        key = r.strip()
        if key and key not in seen:
            parse_recipient(key, source=source)
            seen.append(key)
    return seen


def read_identities(path: Path) -> list[Identity]:
    """The identities in an age identity file (or an OpenSSH private key file)."""
    import pyrage

    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BackupKeyError(
            f"identity file {path} does not exist",
            hint="Point MANIFEST_BACKUP_IDENTITY_FILE at the private key made by "
            "`inv backup.keygen`, or put it at secrets/backup_identity.txt.",
        ) from None
    except OSError as exc:
        raise BackupKeyError(f"cannot read identity file {path}: {exc.strerror}") from exc
    text = textfiles.decode(data, name=str(path))  # Notepad's BOM, UTF-16, CRLF: all read
    if text.lstrip().startswith("-----BEGIN"):
        try:
            return [Identity(pyrage.ssh.Identity.from_buffer(text.encode()), text)]
        except pyrage.IdentityError as exc:
            raise BackupKeyError(f"{path} is not a usable SSH private key: {exc}") from None
    identities: list[Identity] = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            identities.append(Identity(pyrage.x25519.Identity.from_str(line), line))
        except pyrage.IdentityError:
            # The line is secret: say where it is, never what it is.
            raise BackupKeyError(
                f"{path}, line {n}: not an age identity (AGE-SECRET-KEY-1...)",
                hint="Use the file `inv backup.keygen` wrote, unchanged.",
            ) from None
    if not identities:
        raise BackupKeyError(f"{path} holds no age identity (AGE-SECRET-KEY-1...)")
    return identities


def public_keys(identities: Sequence[Identity]) -> list[str]:
    """The recipients of x25519 identities (SSH identities cannot say theirs)."""
    return [str(i.key.to_public()) for i in identities if hasattr(i.key, "to_public")]


def _keys(identities: Sequence[Identity]) -> list[Any]:
    return [i.key for i in identities]


def write_identity_file(path: Path, pair: KeyPair, *, now: datetime | None = None) -> None:
    """Write ``pair`` as age-keygen does (readable by ``age -d -i``), mode 0600; never
    replaces an existing file."""
    when = (now or datetime.now(UTC)).isoformat(timespec="seconds")
    text = f"# created: {when}\n# public key: {pair.recipient}\n{pair.identity}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def is_encrypted(head: bytes) -> bool:
    """Whether a file starting with ``head`` is an age file (binary, not armored)."""
    return head.startswith(MAGIC)


def file_is_encrypted(path: Path) -> bool:
    with path.open("rb") as f:
        return is_encrypted(f.read(len(MAGIC)))


# --- streams ---------------------------------------------------------------------------


class _GuardedSink:
    """pyrage's writer: remembers an exception from ``sink`` (pyrage's final flush
    happens in a destructor that drops errors, so we must not rely on it to report one)."""

    def __init__(self, sink: _Sink) -> None:
        self.sink = sink
        self.error: BaseException | None = None

    def write(self, data: bytes) -> int:
        try:
            self.sink.write(data)
        except BaseException as exc:
            self.error = self.error or exc
            raise
        return len(data)

    def flush(self) -> None:
        pass


@functools.cache
def age_cli() -> str | None:
    """The ``age`` command-line tool (the Go reference implementation), if one that says
    it is age 1.x is on PATH (asked once per process)."""
    found = shutil.which("age")
    if found is None:
        return None
    try:
        said = subprocess.run(
            [found, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    # Another program called age, or a version we do not know: pyrage instead.
    return found if re.fullmatch(r"v?1\.\d+(\.\d+)?\S*", said) else None


def encrypt_command(recipients: Sequence[str]) -> list[str]:
    """The child that encrypts to ``recipients``: the age CLI if there is one, else pyrage
    in ``python -m ops.agepump``. The same format either way; the CLI costs a fifth of
    pyrage's CPU here (``bench/backup_bench.py``'s raw rates: about 2000 against 400 MB
    per CPU second), which is what an encrypted backup.now on a busy 2-core machine
    loses to a plain one."""
    cli = age_cli()
    if cli is not None:
        return [cli, *(arg for key in recipients for arg in ("-r", key))]
    return _agepump("encrypt", *recipients)


def _agepump(*args: str) -> list[str]:
    return [sys.executable, "-m", "ops.agepump", *args]


class _Pump:
    """A child process with its stdin and stdout as pipes of ours.

    ``python -m ops.agepump`` imports ``ops`` from where this package is, whatever the
    caller's working directory or sys.path (invoke adds the tasks' folder to ours).
    """

    def __init__(self, argv: Sequence[str], *, pass_fds: Sequence[int] = ()) -> None:
        root = str(Path(__file__).resolve().parent.parent)
        path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
        self.child = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=_GATHER,
            env={**os.environ, "PYTHONPATH": path},
            pass_fds=pass_fds,
        )
        assert self.child.stdin is not None and self.child.stdout is not None
        self.stdin: IO[bytes] = self.child.stdin
        self.stdout: IO[bytes] = self.child.stdout
        for pipe in (self.stdin, self.stdout):
            _widen(pipe.fileno())

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.child.kill()

    def end(self) -> tuple[int, str]:
        """Wait for the child; its exit status and the last line it wrote on stderr."""
        status = self.child.wait()
        assert self.child.stderr is not None
        said = self.child.stderr.read().decode(errors="replace").strip().splitlines()
        for pipe in (self.child.stdin, self.child.stdout, self.child.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        # The age CLI ends with a line asking for bug reports: its error is the line before.
        errors = [line.removeprefix("age: error: ") for line in said if "error:" in line]
        return status, (errors or said or [f"exit status {status}"])[-1]


def _widen(fd: int) -> None:
    """A 1 MiB pipe where Linux allows it (64 KiB by default: 16x the hand-overs)."""
    setpipe = getattr(fcntl, "F_SETPIPE_SZ", None) if fcntl is not None else None
    if setpipe is not None:
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, setpipe, 1024 * 1024)


class EncryptingWriter:
    """Plaintext written here goes out as age ciphertext into ``sink``; ``close()`` writes
    the last chunk. Nothing but ciphertext ever reaches ``sink``.

    The encryption runs in a child process (``encrypt_command``: the age CLI, or pyrage in
    ``ops.agepump``): plaintext goes to it through a pipe, a thread of ours copies its
    ciphertext into ``sink``. Both copies release the
    GIL, so the caller's thread (the exec stream's reader) keeps running while a chunk is
    encrypted; with pyrage in a thread of ours, every chunk stopped it.

    Use as a context manager: leaving it normally closes (and raises any error of the
    encryption or of ``sink``); leaving it by an exception stops the child.
    """

    def __init__(self, sink: _Sink, recipients: Sequence[str]) -> None:
        if not recipients:
            raise ConfigError("no recipients to encrypt to", hint="Run `inv backup.keygen`.")
        keys = [r.strip() for r in recipients]
        for key in keys:
            parse_recipient(key)  # a clear error here, not a child's exit status
        self._sink = sink
        self._error: BaseException | None = None
        self._closed = False
        self._pump = _Pump(encrypt_command(keys))
        self._thread = threading.Thread(target=self._copy_out, name="age-out", daemon=True)
        self._thread.start()

    def _copy_out(self) -> None:
        fd = self._pump.stdout.fileno()
        try:
            while chunk := os.read(fd, _GATHER):
                self._sink.write(chunk)
        except BaseException as exc:
            self._error = exc
            self._pump.kill()  # the next write to it fails, and raises this error

    def write(self, data: bytes | bytearray | memoryview) -> int:
        try:
            self._pump.stdin.write(data)
        except OSError:  # the child is gone: why is in _error or its status
            self._closed = True
            self._finish()
            raise BackupKeyError("age encryption stopped early") from None
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            with contextlib.suppress(OSError):
                self._pump.stdin.close()
            self._finish()

    def abort(self) -> None:
        if not self._closed:
            self._closed = True
            self._pump.kill()
            with contextlib.suppress(OSError):
                self._pump.stdin.close()
            self._thread.join()
            self._pump.end()

    def _finish(self) -> None:
        self._thread.join()
        status, said = self._pump.end()
        if self._error is not None:
            if isinstance(self._error, OSError | KeyboardInterrupt):
                raise self._error
            raise BackupKeyError(f"age encryption failed: {self._error}") from self._error
        if status != 0:
            raise BackupKeyError(f"age encryption failed: {said}")

    def __enter__(self) -> EncryptingWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class DecryptingReader:
    """Plaintext read from the age ciphertext in ``source``; ``read`` raises (never ends
    early) if the ciphertext is altered, cut short, or not for ``identities``.

    The decryption runs in a child process, as for EncryptingWriter: the age CLI where one
    is installed and the identities can reach it through a pipe of their own (POSIX:
    ``-i /dev/fd/N``), else pyrage in ``ops.agepump``, which reads them first on its stdin.
    Never through argv, the environment or a file. A thread of ours copies ``source`` into
    the child, and ``read`` takes its plaintext. Plaintext before a bad chunk may already
    have been read: to be sure a file is whole before acting on it, run ``check_stream``
    first.
    """

    def __init__(self, source: IO[bytes], identities: Sequence[Identity], *, name: str) -> None:
        self.name = name
        self._source = source
        self._error: BaseException | None = None
        self._done = False
        cli = age_cli()
        if cli is not None and os.name == "posix":
            keys, keys_in = os.pipe()
            try:
                self._pump = _Pump([cli, "-d", "-i", f"/dev/fd/{keys}"], pass_fds=(keys,))
            finally:
                os.close(keys)
            # An identity file is a few hundred bytes: less than a pipe holds, never blocks.
            with os.fdopen(keys_in, "wb") as f:
                f.write("\n".join(i.text for i in identities).encode())
            self._prefix = b""
        else:
            self._pump = _Pump(_agepump("decrypt"))
            texts = json.dumps([i.text for i in identities]).encode()
            self._prefix = b"%d\n" % len(texts) + texts
        self._thread = threading.Thread(target=self._copy_in, name="age-in", daemon=True)
        self._thread.start()

    def _copy_in(self) -> None:
        try:
            with self._pump.stdin as pipe:
                pipe.write(self._prefix)
                while chunk := self._source.read(_GATHER):
                    pipe.write(chunk)
        except BrokenPipeError:
            pass  # the child stopped reading: its status says why (or we closed it)
        except BaseException as exc:
            self._error = exc
            self._pump.kill()

    def read(self, size: int = -1) -> bytes:
        if self._done:
            return b""
        data = self._pump.stdout.read(size)
        if not data:
            self._raise_if_failed()
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:
        if self._done:
            return 0
        n = self._pump.stdout.readinto(buffer)  # type: ignore[attr-defined]
        if not n:
            self._raise_if_failed()
        return int(n)

    def _raise_if_failed(self) -> None:
        if self._done:
            return
        self._done = True
        self._thread.join()
        status, said = self._pump.end()
        if self._error is not None:
            raise self._error
        if status != 0:
            raise decrypt_error(RuntimeError(said), self.name)

    def close(self) -> None:
        if not self._done:
            self._done = True
            self._pump.kill()
            self._thread.join()
            self._pump.end()

    def __enter__(self) -> DecryptingReader:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def decrypt_error(
    error: BaseException, name: str, *, recipients: Sequence[str] = (), mine: Sequence[str] = ()
) -> BackupKeyError | CorruptBackup:
    """pyrage's exception (or the age CLI's error line) as ours: a key that does not fit,
    or an altered/cut file.

    age cannot tell "not one of the recipients" from "the key stanzas were altered"; the
    sidecar's list of recipients can (``recipients``: from the sidecar, ``mine``: the
    public keys of the identities we hold).
    """
    text = str(error)
    if "No matching keys" in text or "no identity matched" in text:
        if recipients and mine and set(recipients) & set(mine):
            return CorruptBackup(
                f"{name}: its age header does not open with your identity although the "
                "sidecar lists your key: the header was altered"
            )
        listed = f" (it is encrypted to {', '.join(recipients)})" if recipients else ""
        return BackupKeyError(
            f"{name}: your identity is not one of the file's recipients{listed}",
            hint="Use the identity file of one of those keys "
            "(MANIFEST_BACKUP_IDENTITY_FILE or secrets/backup_identity.txt).",
        )
    if any(m in text for m in ("Header is invalid", "Unknown age format", "failed to read header")):
        return CorruptBackup(f"{name}: not a readable age file ({text})")
    return CorruptBackup(
        f"{name}: the ciphertext fails age's authentication ({text}): it was altered or cut short"
    )


@dataclass(frozen=True, kw_only=True)
class Checked:
    """What a full decryption found: the plaintext's size and its first bytes."""

    plain_size: int
    head: bytes
    tail: bytes


class _Inspect:
    def __init__(self, head: int, tail: int) -> None:
        self.size = 0
        self.head = bytearray()
        self.tail = bytearray()
        self._head, self._tail = head, tail

    def write(self, data: bytes) -> int:
        self.size += len(data)
        if len(self.head) < self._head:
            self.head += data[: self._head - len(self.head)]
        self.tail += data[-self._tail :]
        del self.tail[: -self._tail]
        return len(data)


def check_stream(
    source: IO[bytes],
    identities: Sequence[Identity],
    *,
    name: str,
    recipients: Sequence[str] = (),
    head: int = 4096,
    tail: int = 4096,
) -> Checked:
    """Decrypt all of ``source`` into nothing: every chunk is authenticated. Returns the
    plaintext's size, head and tail (for format checks); raises BackupKeyError or
    CorruptBackup."""
    import pyrage

    sink = _Inspect(head, tail)
    try:
        pyrage.decrypt_io(source, _GuardedSink(sink), _keys(identities))
    except (pyrage.DecryptError, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise  # a real read error of the file, not age's
        raise decrypt_error(exc, name, recipients=recipients, mine=public_keys(identities)) from exc
    return Checked(plain_size=sink.size, head=bytes(sink.head), tail=bytes(sink.tail))


def check_file(
    path: Path, identities: Sequence[Identity], *, recipients: Sequence[str] = ()
) -> Checked:
    with path.open("rb") as f:
        return check_stream(f, identities, name=str(path), recipients=recipients)


class _Enough(Exception):
    """Stops a decryption once the bytes asked for have arrived."""


def open_head(
    path: Path,
    identities: Sequence[Identity],
    *,
    recipients: Sequence[str] = (),
    head: int = 64 * 1024,
) -> Checked:
    """Decrypt only the first chunk(s) of ``path``, up to ``head`` bytes: proves the
    identity opens it (BackupKeyError otherwise) and gives the dump's header, without a
    pass over the whole file. The plaintext size comes from the ciphertext's size; the
    chunks after the first are authenticated when they are read.
    """
    import pyrage

    sink = _Inspect(head, 0)

    class Stop:
        def write(self, data: bytes) -> int:
            sink.write(data)
            if sink.size >= head:
                raise _Enough
            return len(data)

    with path.open("rb") as f:
        try:
            pyrage.decrypt_io(f, _GuardedSink(Stop()), _keys(identities))
        except _Enough:
            pass
        except (pyrage.DecryptError, OSError) as exc:
            if isinstance(exc, OSError) and exc.errno is not None:
                raise
            raise decrypt_error(
                exc, str(path), recipients=recipients, mine=public_keys(identities)
            ) from exc
    return Checked(plain_size=plain_size_of(path), head=bytes(sink.head), tail=b"")


_CHUNK = 64 * 1024
_TAG = 16
_NONCE = 16


def plain_size_of(path: Path) -> int:
    """The plaintext size of a binary age file, from its size and header (age v1: a 16-byte
    nonce, then 64 KiB chunks each with a 16-byte tag; the last chunk may be shorter, and
    only an empty file has an empty chunk). CorruptBackup if the sizes cannot be an age file.
    """
    with path.open("rb") as f:
        start = f.read(64 * 1024)
        total = f.seek(0, 2)
    mac = start.find(b"\n--- ")
    end = start.find(b"\n", mac + 1) if mac >= 0 else -1
    if not start.startswith(MAGIC) or end < 0:
        raise CorruptBackup(f"{path}: not a readable age file (no header end)")
    payload = total - (end + 1) - _NONCE
    chunks = max(1, -(-payload // (_CHUNK + _TAG)))
    plain = payload - chunks * _TAG
    if payload < _TAG or plain < 0 or (chunks > 1 and plain <= (chunks - 1) * _CHUNK):
        raise CorruptBackup(f"{path}: its size cannot be that of an age file (cut short?)")
    return plain
