"""What every runner shares: the ``CommandRunner`` protocol, its result, bounded buffers."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO

from ops.errors import ExecFailed

CHUNK_SIZE = 256 * 1024
STDERR_TAIL_BYTES = 8 * 1024
CAPTURE_LIMIT = 4 * 1024 * 1024

Progress = Callable[[int], None]
Describe = Callable[[Sequence[str]], str]


@dataclass(frozen=True, kw_only=True)
class CompletedExec:
    """A finished command, named like ``subprocess.CompletedProcess``.

    ``stdout`` holds the output only when no stdout file was given (bounded by
    ``CAPTURE_LIMIT``); ``stderr`` is the decoded tail of stderr (``STDERR_TAIL_BYTES``),
    for messages. ``stdout_bytes``/``stdin_bytes`` count what passed through.
    """

    args: list[str]
    returncode: int
    stdout: bytes = b""
    stderr: str = ""
    stdout_bytes: int = 0
    stdin_bytes: int = 0


def command_name(argv: Sequence[str]) -> str:
    """A short name of a command for messages: the file name of ``argv[0]``."""
    return os.path.basename(argv[0]) if argv else "command"


def exit_error(
    result: CompletedExec, *, name: str, where: str, **context: str | None
) -> ExecFailed:
    """The error of a command that exited non-zero, with its stderr tail."""
    return ExecFailed(
        f"{name} {where} exited with {result.returncode}"
        + (f": {result.stderr}" if result.stderr else ""),
        **context,
    )


class StderrTail:
    """The last ``limit`` bytes of a stream, for error messages."""

    def __init__(self, limit: int = STDERR_TAIL_BYTES) -> None:
        self._limit = limit
        self._data = bytearray()

    def add(self, data: bytes | memoryview) -> None:
        self._data += data
        if len(self._data) > self._limit:
            del self._data[: len(self._data) - self._limit]

    def text(self) -> str:
        return self._data.decode("utf-8", errors="replace").strip()


class Capture:
    """A bounded in-memory stdout for small commands (listing, checksums)."""

    def __init__(self, limit: int = CAPTURE_LIMIT) -> None:
        self.limit = limit
        self.data = bytearray()

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if len(self.data) + len(data) > self.limit:
            raise ExecFailed(
                f"command printed more than {self.limit} bytes; give it a stdout file",
                hint="This is a bug in the caller: large output must stream to a file.",
            )
        self.data += data
        return len(data)


@dataclass(frozen=True, kw_only=True)
class ExecRequest:
    """One ``run``, as a runner's ``_execute`` receives it: where stdout goes (``sink``: the
    caller's file, else a bounded ``Capture``), and whether it was the caller's."""

    args: list[str]
    stdin: IO[bytes] | None
    stdin_size: int | None
    sink: IO[bytes] | Capture
    to_file: bool  # stdout is the caller's file (not captured)
    progress: Progress | None

    def captured(self) -> bytes:
        """What was captured of stdout (empty when it went to the caller's file)."""
        return bytes(self.sink.data) if isinstance(self.sink, Capture) else b""


class CommandRunner(ABC):
    """Something that runs an argument list somewhere and streams its stdin/stdout.

    Two implementations: ``PodExec`` (a pod's container, over the exec API) and
    ``LocalRunner`` (a local subprocess). ``ops.backups`` takes either, so the same
    dump/verify/restore code runs in the pod and, in tests and local tools, here. Both
    share ``run``; each says where it runs and how it executes one request.
    """

    @property
    @abstractmethod
    def where(self) -> str:
        """Where the commands run, for messages ("pod postgres-0 (ctx/ns)")."""

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: IO[bytes] | None = None,
        stdin_size: int | None = None,
        stdout: IO[bytes] | None = None,
        check: bool = True,
        progress: Progress | None = None,
    ) -> CompletedExec:
        """Run ``argv`` like ``subprocess.run``: ``stdin`` streamed in (``stdin_size`` bytes
        if known), stdout streamed into ``stdout`` (else captured, up to
        ``CAPTURE_LIMIT``), ``progress`` called with byte counts; ``check``: a non-zero
        exit raises ExecFailed with the stderr tail."""
        request = ExecRequest(
            args=list(argv),
            stdin=stdin,
            stdin_size=stdin_size,
            sink=stdout if stdout is not None else Capture(),
            to_file=stdout is not None,
            progress=progress,
        )
        result = self._execute(request)
        if check and result.returncode != 0:
            raise self._exit_error(result)
        return result

    @abstractmethod
    def _execute(self, request: ExecRequest) -> CompletedExec:
        """Run one request to its end and return its result (a non-zero exit included)."""

    @abstractmethod
    def _exit_error(self, result: CompletedExec) -> ExecFailed:
        """The error of a command that exited non-zero (``exit_error`` with context)."""
