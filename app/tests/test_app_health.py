"""Probes: live never touches the DB; startup means migrated; ready follows the database."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path

import psycopg
import pytest
from app_helpers import (
    blocked_requests,
    free_port,
    pooled_connections,
    settings_for,
    wait_for_status,
)
from fastapi.testclient import TestClient

from student_api.main import create_app
from tests.support.postgres import PostgresServer

pytestmark = pytest.mark.integration


def test_without_database_live_answers_and_the_rest_waits(
    postgres_server: PostgresServer,
) -> None:
    settings = settings_for(postgres_server, "postgres", db_port=free_port())

    with TestClient(create_app(settings)) as client:
        live = client.get("/health/live")
        startup = client.get("/health/startup")
        ready = client.get("/health/ready")
        api = client.get("/api/student")

    assert (live.status_code, live.json()) == (200, {"status": "ok"})
    assert (startup.status_code, startup.json()) == (503, {"status": "starting"})
    assert (ready.status_code, ready.json()["status"]) == (503, "starting")
    assert api.status_code == 503
    assert "not ready" in api.json()["detail"]


def test_startup_reports_the_migrated_revision(client: TestClient) -> None:
    assert client.get("/health/startup").json() == {"status": "started", "revision": "0001"}


def test_ready_goes_false_when_the_database_stops_and_true_when_back(
    client: TestClient, postgres_server: PostgresServer
) -> None:
    assert client.get("/health/ready").json() == {"status": "ready"}
    client.get("/api/student")  # leave a pooled connection that the outage breaks

    postgres_server.stop()
    try:
        started = time.monotonic()
        ready = client.get("/health/ready")
        took = time.monotonic() - started
        live = client.get("/health/live")
        api = client.get("/api/student")
    finally:
        postgres_server.start()

    assert ready.status_code == 503
    assert ready.json()["status"] == "unavailable"
    assert took < 3.0
    assert live.status_code == 200
    assert (api.status_code, api.json()) == (
        503,
        {"detail": "database unavailable, try again shortly"},
    )
    assert wait_for_status(client.get, "/health/ready", 200, timeout=15).json() == {
        "status": "ready"
    }
    assert client.get("/api/student").status_code == 200


def test_connections_the_server_closed_are_replaced_before_any_request_fails(
    client: TestClient, postgres_server: PostgresServer, fresh_database: str
) -> None:
    # As after a database restart while the app was idle: every pooled connection is dead.
    with pooled_connections(client, 3):
        pass  # at least three idle connections in the pool now
    app_sessions = (
        "FROM pg_stat_activity WHERE application_name = 'student-api' "
        f"AND datname = '{fresh_database}'"
    )
    killed = postgres_server.psql(f"SELECT count(pg_terminate_backend(pid)) {app_sessions}")
    deadline = time.monotonic() + 10
    while postgres_server.psql(f"SELECT count(*) {app_sessions}") != "0":
        assert time.monotonic() < deadline, "backends did not exit"
        time.sleep(0.05)

    statuses = [client.get("/api/student").status_code for _ in range(5)]

    assert int(killed) >= 3
    assert statuses == [200] * 5


def _postgres_pids(server: PostgresServer) -> list[int]:
    postmaster = int((server.datadir / "postmaster.pid").read_text().split()[0])
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == postmaster:
            children.append(int(stat.parent.name))
    return [postmaster, *children]


@contextmanager
def frozen(server: PostgresServer) -> Iterator[None]:
    """SIGSTOP the server's processes: connections stay open but nothing answers.

    A backend may exit between the listing and its signal; that must neither fail the
    test nor leave the ones already stopped frozen for the rest of the session.
    """
    pids = _postgres_pids(server)
    try:
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        yield
    finally:
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def test_ready_answers_within_its_timeout_when_the_database_hangs(
    postgres_server: PostgresServer, fresh_database: str
) -> None:
    if not hasattr(signal, "SIGSTOP") or not Path("/proc").is_dir():
        pytest.skip("needs Linux /proc and SIGSTOP")
    settings = settings_for(postgres_server, fresh_database, ready_timeout=1.0)
    with TestClient(create_app(settings)) as client:
        wait_for_status(client.get, "/health/ready", 200)

        with frozen(postgres_server):
            started = time.monotonic()
            ready = client.get("/health/ready")
            took = time.monotonic() - started

        assert ready.status_code == 503
        assert ready.json()["detail"] == "database did not answer within 1s"
        # Bounded by READY_TIMEOUT; without it a pooled connection to a frozen server hangs forever.
        assert 0.9 < took < 2.9
        wait_for_status(client.get, "/health/ready", 200, timeout=15)


def test_exhausted_pool_answers_503_not_a_hang(
    postgres_server: PostgresServer, fresh_database: str
) -> None:
    settings = settings_for(
        postgres_server, fresh_database, db_pool_size=1, db_max_overflow=0, db_pool_timeout=0.5
    )
    with TestClient(create_app(settings)) as client:
        wait_for_status(client.get, "/health/startup")
        with pooled_connections(client):
            busy = client.get("/api/student")
            ready = client.get("/health/ready")
        after = client.get("/api/student")

    assert (busy.status_code, busy.json()) == (
        503,
        {"detail": "database unavailable, try again shortly"},
    )
    assert ready.status_code == 200  # the probe does not queue for the pool
    assert after.status_code == 200


def test_requests_beyond_the_pool_queue_at_its_gate_and_time_out_there(
    postgres_server: PostgresServer, fresh_database: str
) -> None:
    # One connection, held by a listing that waits inside the database for a table lock:
    # the requests after it wait at the pool's gate (not in psycopg_pool's own queue), and
    # answer 503 once DB_POOL_TIMEOUT has passed.
    settings = settings_for(
        postgres_server, fresh_database, db_pool_size=1, db_max_overflow=0, db_pool_timeout=1.0
    )
    with TestClient(create_app(settings)) as client:
        wait_for_status(client.get, "/health/startup")
        pool = client.app.state.runtime.pool  # type: ignore[attr-defined]
        with psycopg.connect(postgres_server.dsn(fresh_database)) as blocker:
            blocker.execute("LOCK TABLE student IN ACCESS EXCLUSIVE MODE")
            with ThreadPoolExecutor(4) as threads:
                first = threads.submit(client.get, "/api/student")
                deadline = time.monotonic() + 10
                while blocked_requests(postgres_server, fresh_database) < 1:
                    assert time.monotonic() < deadline, (
                        "the first request never reached the database"
                    )
                    time.sleep(0.05)
                started = time.monotonic()
                waiting = [threads.submit(client.get, "/api/student") for _ in range(3)]
                queued = [f.result() for f in waiting]
                took = time.monotonic() - started
                blocker.rollback()
                answered = first.result(timeout=10)
        after = client.get("/api/student")

    assert [(q.status_code, q.json()) for q in queued] == [
        (503, {"detail": "database unavailable, try again shortly"})
    ] * 3
    assert 0.9 < took < 4.0
    assert (answered.status_code, answered.json()) == (200, [])
    assert after.status_code == 200
    assert pool.get_stats().get("requests_queued", 0) == 0  # none waited in the pool itself
