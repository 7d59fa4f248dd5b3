"""Alembic migrations, applied under a PostgreSQL advisory lock.

Replicas that start together all call :func:`migrate`; the transaction-scoped advisory lock
lets one of them upgrade while the others wait, and those then find the schema at head and
do nothing. PostgreSQL DDL is transactional, so a crash mid-way leaves the old schema and
releases the lock.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, func, select

from alembic import command

log = logging.getLogger("student_api.migrations")

# Any fixed 64-bit number works; it only has to be the same in every replica.
MIGRATION_LOCK_KEY = 0x5374_7564_656E_7401


@dataclass(frozen=True, kw_only=True)
class MigrationResult:
    before: str | None
    after: str | None

    @property
    def applied(self) -> bool:
        return self.before != self.after


def alembic_config(ini: Path) -> Config:
    if not ini.is_file():
        raise FileNotFoundError(f"alembic.ini not found at {ini} (set ALEMBIC_INI)")
    return Config(str(ini))


def head_revision(ini: Path) -> str | None:
    return ScriptDirectory.from_config(alembic_config(ini)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def migrate(engine: Engine, ini: Path) -> MigrationResult:
    """Upgrade the database to head, once across all replicas starting together."""
    config = alembic_config(ini)
    head = ScriptDirectory.from_config(config).get_current_head()
    with engine.begin() as conn:
        conn.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK_KEY)))
        before = MigrationContext.configure(conn).get_current_revision()
        if before == head:
            log.info("migrations: database already at revision %s, nothing to do", head)
            return MigrationResult(before=before, after=before)
        log.info("migrations: upgrading %s -> %s", before or "empty database", head)
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
        after = MigrationContext.configure(conn).get_current_revision()
    log.info("migrations: applied, database now at revision %s", after)
    return MigrationResult(before=before, after=after)
