"""Migrations from an empty database, once across replicas starting together."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable

import psycopg
import pytest
from app_helpers import AppProcess, db_env, settings_for

from student_api.core.db import build_engine
from student_api.core.migrations import MIGRATION_LOCK_KEY, migrate
from tests.support.postgres import PostgresServer

pytestmark = pytest.mark.integration


def test_migrate_an_empty_database_then_nothing_to_do(
    postgres_server: PostgresServer, fresh_database: str
) -> None:
    settings = settings_for(postgres_server, fresh_database)
    engine = build_engine(settings)
    try:
        first = migrate(engine, settings.alembic_ini)
        second = migrate(engine, settings.alembic_ini)
    finally:
        engine.dispose()

    assert (first.before, first.after, first.applied) == (None, "0001", True)
    assert (second.before, second.after, second.applied) == ("0001", "0001", False)
    columns = postgres_server.psql(
        "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
        "WHERE table_name = 'student' ORDER BY ordinal_position",
        fresh_database,
    )
    assert columns.splitlines() == [
        "id|integer|NO",
        "name|character varying|NO",
        "age|integer|NO",
    ]
    assert postgres_server.psql("SELECT version_num FROM alembic_version", fresh_database) == "0001"


def test_migrate_command_for_a_job(postgres_server: PostgresServer, fresh_database: str) -> None:
    env = {"PATH": "/usr/bin:/bin", **db_env(postgres_server, fresh_database)}

    runs = [
        subprocess.run(
            [sys.executable, "-m", "student_api", "migrate"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        for _ in range(2)
    ]

    assert [run.returncode for run in runs] == [0, 0]
    assert "migrations: applied, database now at revision 0001" in runs[0].stderr
    assert "already at revision 0001, nothing to do" in runs[1].stderr


def _waiting_for_lock(server: PostgresServer, database: str) -> int:
    return int(
        server.psql(
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
            f"WHERE l.locktype = 'advisory' AND NOT l.granted AND d.datname = '{database}'",
            database,
        )
    )


def test_two_processes_starting_together_migrate_once(
    postgres_server: PostgresServer,
    fresh_database: str,
    start_app: Callable[..., AppProcess],
) -> None:
    env = db_env(postgres_server, fresh_database)
    # Hold the migration lock so both processes are provably waiting on it at once.
    with psycopg.connect(postgres_server.dsn(fresh_database), autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        apps = [start_app(env), start_app(env)]
        deadline = time.monotonic() + 30
        while _waiting_for_lock(postgres_server, fresh_database) < 2:
            assert time.monotonic() < deadline, "the two processes never both waited"
            time.sleep(0.05)
        for app in apps:
            assert app.get("/health/startup").status_code == 503
        holder.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))

    for app in apps:
        assert app.wait_for("/health/startup").json() == {"status": "started", "revision": "0001"}
    logs = [app.logs() for app in apps]
    applied = sum("migrations: applied" in log for log in logs)
    skipped = sum("already at revision 0001, nothing to do" in log for log in logs)
    assert (applied, skipped) == (1, 1), logs
    assert postgres_server.psql("SELECT count(*) FROM alembic_version", fresh_database) == "1"
    for app in apps:
        assert app.get("/api/student").json() == []


def test_models_match_the_migrated_schema_and_downgrade_round_trips(
    postgres_server: PostgresServer, fresh_database: str
) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from alembic import command
    from student_api.core.migrations import alembic_config
    from student_api.models import Base

    settings = settings_for(postgres_server, fresh_database)
    engine = build_engine(settings)
    try:
        migrate(engine, settings.alembic_ini)
        with engine.connect() as conn:
            drift = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        with engine.begin() as conn:
            config = alembic_config(settings.alembic_ini)
            config.attributes["connection"] = conn
            command.downgrade(config, "base")
        tables_after_downgrade = postgres_server.psql(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'student'",
            fresh_database,
        )
        again = migrate(engine, settings.alembic_ini)
    finally:
        engine.dispose()

    assert drift == []
    assert tables_after_downgrade == "0"
    assert again.applied
