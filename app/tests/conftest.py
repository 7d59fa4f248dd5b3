"""Fixtures for the student API's tests: settings for a fresh database, the app in-process
(TestClient) and as a real ``python -m student_api`` process.

The PostgreSQL server itself is the repository's ``postgres_server`` fixture (root conftest).
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from app_helpers import AppProcess, free_port, settings_for, wait_for_status

with warnings.catch_warnings():
    # Starlette now prefers the httpx2 fork; httpx still works and is what the tests use.
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from student_api.core.config import Settings
from student_api.main import create_app
from tests.support.postgres import PostgresServer


@pytest.fixture
def app_settings(postgres_server: PostgresServer, fresh_database: str) -> Settings:
    return settings_for(postgres_server, fresh_database)


@pytest.fixture
def client(app_settings: Settings) -> Iterator[TestClient]:
    """The app in-process on a fresh, migrated database."""
    with TestClient(create_app(app_settings)) as test_client:
        wait_for_status(test_client.get, "/health/startup")
        yield test_client


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
            "SHUTDOWN_DELAY": "0",
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
