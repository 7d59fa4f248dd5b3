"""Fixtures for the student API's tests: settings for a fresh database, the app in-process
(TestClient) and as a real ``python -m student_api`` process.

The PostgreSQL server itself is the repository's ``postgres_server`` fixture (root conftest).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

with warnings.catch_warnings():
    # Starlette now prefers the httpx2 fork; httpx still works and is what the tests use.
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from student_api.core.config import Settings
from student_api.main import create_app
from tests.support.postgres import PostgresServer


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


@pytest.fixture
def app_settings(postgres_server: PostgresServer, fresh_database: str) -> Settings:
    return settings_for(postgres_server, fresh_database)


@pytest.fixture
def client(app_settings: Settings) -> Iterator[TestClient]:
    """The app in-process on a fresh, migrated database."""
    with TestClient(create_app(app_settings)) as test_client:
        wait_for_status(test_client.get, "/health/startup")
        yield test_client


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


@pytest.fixture
def start_app(tmp_path: Path) -> Iterator[Callable[..., AppProcess]]:
    """Start app processes with the given environment; all are stopped after the test."""
    started: list[AppProcess] = []

    def start(env: dict[str, str], *args: str) -> AppProcess:
        port = free_port()
        log_path = tmp_path / f"app-{len(started)}.log"
        base = {k: v for k, v in os.environ.items() if not k.startswith("DB_")}
        full_env = {
            **base,
            "APP_SECRETS_DIR": str(tmp_path / "no-secrets"),
            "PORT": str(port),
            "HOST": "127.0.0.1",
            "MIGRATION_RETRY_SECONDS": "0.2",
            **env,
        }
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "student_api", *args],
                env=full_env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        app = AppProcess(proc=proc, port=port, log_path=log_path)
        started.append(app)
        return app

    yield start
    for app in started:
        if app.proc.poll() is None:
            app.proc.kill()
            app.proc.wait(timeout=10)
