"""``LocalRunner``: the same interface as ``PodExec``, for a local subprocess."""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass

from ops.errors import ExecFailed
from ops.execstream.runner import (
    CHUNK_SIZE,
    CommandRunner,
    CompletedExec,
    Describe,
    ExecRequest,
    StderrTail,
    command_name,
    exit_error,
)


@dataclass(frozen=True)
class LocalRunner(CommandRunner):
    """Runs commands as local subprocesses (local PostgreSQL tools, and the tests).

    The same ``sh -c`` commands as in the pod run here, with the credentials in ``env``
    (``POSTGRES_USER``/``POSTGRES_PASSWORD`` plus ``PGHOST``/``PGPORT``). Like ``PodExec``,
    stdout without a file to stream to is captured up to ``CAPTURE_LIMIT``, and only the
    tail of stderr is kept.
    """

    env: Mapping[str, str] | None = None
    chunk_size: int = CHUNK_SIZE
    describe: Describe = command_name

    @property
    def where(self) -> str:
        return "this machine"

    def _execute(self, request: ExecRequest) -> CompletedExec:
        args, stdin, sink, progress = request.args, request.stdin, request.sink, request.progress
        command = args
        if os.name == "nt":  # the pod's /dev/null, for local tools on Windows
            command = [os.devnull if word == "/dev/null" else word for word in args]
        proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(self.env) if self.env is not None else None,
        )
        tail = StderrTail()
        fed = 0
        feed_error: list[BaseException] = []

        def feed() -> None:
            nonlocal fed
            assert proc.stdin is not None and stdin is not None
            try:
                while chunk := stdin.read(self.chunk_size):
                    proc.stdin.write(chunk)
                    fed += len(chunk)
                    if progress is not None:
                        progress(len(chunk))
            except BrokenPipeError:
                pass
            except BaseException as exc:
                feed_error.append(exc)
                proc.kill()
            finally:
                with contextlib.suppress(OSError):
                    proc.stdin.close()

        def drain_stderr() -> None:
            assert proc.stderr is not None
            while chunk := proc.stderr.read1(65536):  # type: ignore[attr-defined]
                tail.add(chunk)

        threads = [threading.Thread(target=drain_stderr, daemon=True)]
        if stdin is not None:
            threads.append(threading.Thread(target=feed, daemon=True))
        for thread in threads:
            thread.start()
        out = 0
        try:
            assert proc.stdout is not None
            while chunk := proc.stdout.read1(self.chunk_size):  # type: ignore[attr-defined]
                sink.write(chunk)
                if progress is not None and request.to_file and stdin is None:
                    progress(len(chunk))
                out += len(chunk)
            code = proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for thread in threads:
                thread.join(timeout=5)
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
        if feed_error:
            raise feed_error[0]
        return CompletedExec(
            args=args,
            returncode=code,
            stdout=request.captured(),
            stderr=tail.text(),
            stdout_bytes=out,
            stdin_bytes=fed,
        )

    def _exit_error(self, result: CompletedExec) -> ExecFailed:
        return exit_error(result, name=self.describe(result.args), where=f"on {self.where}")
