"""A runner for local subprocesses, the same interface as ``PodExec`` in the pod."""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO

from ops.errors import ExecFailed
from ops.execstream import CHUNK_SIZE, ExecResult, Progress, StderrTail, program_name

# --- a local runner --------------------------------------------------------------------


@dataclass
class LocalRunner:
    """Runs commands as local subprocesses (local PostgreSQL tools, and the tests).

    The same ``sh -c`` commands as in the pod run here, with the credentials in ``env``
    (``POSTGRES_USER``/``POSTGRES_PASSWORD`` plus ``PGHOST``/``PGPORT``).
    """

    env: Mapping[str, str] | None = None
    chunk_size: int = CHUNK_SIZE
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list, repr=False)

    @property
    def where(self) -> str:
        return "this machine"

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: IO[bytes] | None = None,
        stdin_size: int | None = None,
        stdout: IO[bytes] | None = None,
        check: bool = True,
        progress: Progress | None = None,
    ) -> ExecResult:
        if os.name == "nt":  # the pod's /dev/null, for local tools on Windows
            argv = [os.devnull if word == "/dev/null" else word for word in argv]
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(self.env) if self.env is not None else None,
        )
        self.processes.append(proc)
        tail = StderrTail()
        captured = bytearray()
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
                if stdout is not None:
                    stdout.write(chunk)
                    if progress is not None and stdin is None:
                        progress(len(chunk))
                else:
                    captured += chunk
                out += len(chunk)
            code = proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for thread in threads:
                thread.join(timeout=5)
        if feed_error:
            raise feed_error[0]
        result = ExecResult(
            exit_code=code,
            stderr_tail=tail.text(),
            stdout_bytes=out,
            stdin_bytes=fed,
            stdout=bytes(captured),
        )
        if check and code != 0:
            raise ExecFailed(
                f"{program_name(argv)} on {self.where} exited with {code}"
                + (f": {result.stderr_tail}" if result.stderr_tail else "")
            )
        return result
