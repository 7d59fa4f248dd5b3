"""Helpers for the student API's tests (a module of its own so test files can import it)."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from student_api.core.config import Settings
from tests.support.postgres import PostgresServer

if TYPE_CHECKING:  # importing it warns (Starlette prefers httpx2); conftest silences that
    from starlette.testclient import TestClient


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def db_env(server: PostgresServer, database: str) -> dict[str, str]:
    """The app's DB_* variables for ``database`` on the fixture's server."""
    return {
        "DB_HOST": server.host,
        "DB_PORT": str(server.port),
        "DB_NAME": database,
        "DB_USER": server.superuser,
        "DB_PASSWORD": server.password,
    }


def blocked_requests(server: PostgresServer, database: str) -> int:
    """The app's statements in ``database`` now waiting for a lock (pg_stat_activity)."""
    return int(
        server.psql(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'student-api' "
            f"AND wait_event_type = 'Lock' AND datname = '{database}'",
            database,
        )
    )


def settings_for(server: PostgresServer, database: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "db_host": server.host,
        "db_port": server.port,
        "db_name": database,
        "db_user": server.superuser,
        "db_password": server.password,
        "ready_timeout": 2.0,
        "migration_retry_seconds": 0.2,
        **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]


@contextmanager
def pooled_connections(client: TestClient, count: int = 1) -> Iterator[None]:
    """Hold ``count`` connections of the app's request pool, as requests in flight would
    (checked out on the app's event loop, through the client's portal)."""
    pool = client.app.state.runtime.pool  # type: ignore[attr-defined]
    assert client.portal is not None, "use the TestClient as a context manager"
    with ExitStack() as stack:
        for _ in range(count):
            stack.enter_context(client.portal.wrap_async_context_manager(pool.connection()))
        yield


def wait_for_status(
    get: Callable[[str], httpx.Response], path: str, status: int = 200, timeout: float = 30.0
) -> httpx.Response:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            response = get(path)
            if response.status_code == status:
                return response
            last = f"{response.status_code} {response.text}"
        except httpx.TransportError as exc:
            last = exc
        time.sleep(0.05)
    raise AssertionError(f"{path} did not answer {status} within {timeout}s (last: {last})")


@dataclass
class AppProcess:
    """``python -m student_api`` on a free port, its stderr captured to a file."""

    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, timeout: float = 5.0) -> httpx.Response:
        return httpx.get(self.base_url + path, timeout=timeout)

    def wait_for(self, path: str, status: int = 200, timeout: float = 30.0) -> httpx.Response:
        return wait_for_status(self.get, path, status, timeout)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)
