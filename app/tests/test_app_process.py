"""The real server process: SIGTERM drains in-flight requests; no password in any log line."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg
import pytest
from app_helpers import AppProcess, blocked_requests, db_env, free_port

from tests.support.postgres import PostgresServer

pytestmark = pytest.mark.integration


def test_sigterm_keeps_serving_then_drains_in_flight_requests(
    postgres_server: PostgresServer,
    fresh_database: str,
    start_app: Callable[..., AppProcess],
) -> None:
    delay = 3.0
    env = {**db_env(postgres_server, fresh_database), "SHUTDOWN_DELAY": str(delay)}
    app = start_app(env)
    app.wait_for("/health/ready")
    created = httpx.post(app.base_url + "/api/student", json={"name": "Max", "age": 25}).json()
    results: list[httpx.Response] = []

    with psycopg.connect(postgres_server.dsn(fresh_database)) as blocker:
        # An exclusive table lock holds GET /api/student inside the database: in flight.
        blocker.execute("LOCK TABLE student IN ACCESS EXCLUSIVE MODE")
        in_flight = threading.Thread(
            target=lambda: results.append(app.get("/api/student", timeout=30))
        )
        in_flight.start()
        deadline = time.monotonic() + 10
        while blocked_requests(postgres_server, fresh_database) < 1:
            assert time.monotonic() < deadline, "the request never reached the database"
            time.sleep(0.05)

        app.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        # Inside the delay: still serving new requests, but telling the Service to go away.
        during_live = app.get("/health/live")
        during_ready = app.get("/health/ready")
        time.sleep(delay + 1.0)
        # After the delay the listener is closed, while the in-flight request still waits.
        with pytest.raises(httpx.ConnectError):
            app.get("/health/live")
        assert app.proc.poll() is None
        assert in_flight.is_alive()
        blocker.rollback()

    in_flight.join(timeout=30)
    code = app.proc.wait(timeout=30)

    assert during_live.status_code == 200
    assert (during_ready.status_code, during_ready.json()) == (503, {"status": "draining"})
    assert [r.status_code for r in results] == [200]
    assert results[0].json() == [created]
    # uvicorn re-raises the SIGTERM it handled once it has shut down cleanly.
    assert code in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in app.logs()


def test_no_password_in_any_log_line(
    postgres_server: PostgresServer,
    fresh_database: str,
    start_app: Callable[..., AppProcess],
) -> None:
    good = db_env(postgres_server, fresh_database)
    wrong_password = "Wr0ng-" + postgres_server.password[::-1]
    app = start_app({**good, "LOG_LEVEL": "debug"})
    app.wait_for("/health/ready")
    httpx.post(app.base_url + "/api/student", json={"name": "Max", "age": 25})
    httpx.post(app.base_url + "/api/student", json={"name": "", "age": 999})
    app.get("/api/student/4242")
    app.terminate()

    refused = start_app({**good, "DB_PASSWORD": wrong_password})
    deadline = time.monotonic() + 30
    while "password authentication failed" not in refused.logs():
        assert time.monotonic() < deadline, refused.logs()
        time.sleep(0.1)
    assert refused.get("/health/startup").status_code == 503
    refused.terminate()

    unreachable = start_app({**good, "DB_PORT": str(free_port())})
    deadline = time.monotonic() + 30
    while "not ready (retrying" not in unreachable.logs():
        assert time.monotonic() < deadline, unreachable.logs()
        time.sleep(0.1)
    unreachable.terminate()

    migrate_job = subprocess.run(
        [sys.executable, "-m", "student_api", "migrate"],
        env={"PATH": "/usr/bin:/bin", **good, "DB_PASSWORD": wrong_password},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert migrate_job.returncode == 1
    assert "password authentication failed" in migrate_job.stderr
    assert len(migrate_job.stderr.strip().splitlines()) == 1
    for text in (app.logs(), refused.logs(), unreachable.logs(), migrate_job.stderr):
        assert postgres_server.password not in text
        assert wrong_password not in text
    assert "Wr0ng-" not in refused.logs()


def _write_syscalls(pid: int) -> int:
    """write()/writev() calls the process made so far (``syscw`` of /proc/PID/io; the
    sockets' send() calls, such as libpq's, are not counted there)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == "syscw":
            return int(value)
    raise AssertionError(f"no syscw in /proc/{pid}/io")


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs Linux's /proc/PID/io")
def test_each_response_leaves_in_one_write(
    postgres_server: PostgresServer,
    fresh_database: str,
    start_app: Callable[..., AppProcess],
) -> None:
    # uvicorn alone writes a response's headers and its body in two calls (uvloop writes
    # each at once): 2 per response. student_api.core.transport joins them.
    # (At LOG_LEVEL=info each request also writes its access line to stderr.)
    app = start_app({**db_env(postgres_server, fresh_database), "LOG_LEVEL": "warning"})
    app.wait_for("/health/ready")
    requests = 40
    with httpx.Client(base_url=app.base_url, timeout=5) as client:
        assert client.get("/api/student").status_code == 200  # the connection is open
        before = _write_syscalls(app.proc.pid)
        answers = [client.get(path) for path in ("/health/live", "/api/student") * (requests // 2)]
        writes = _write_syscalls(app.proc.pid) - before

    assert [a.status_code for a in answers] == [200] * requests
    assert answers[0].json() == {"status": "ok"}
    assert answers[1].json() == []
    assert writes == requests
