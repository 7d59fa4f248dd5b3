"""What the running app knows about itself: pool and engines, migrations done, draining."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

import anyio
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from student_api.core.config import Settings
from student_api.core.db import Pool, build_engine, build_pool, build_probe_engine, pool_in_use
from student_api.core.migrations import current_revision, head_revision, migrate

log = logging.getLogger("student_api")


def describe_db_error(exc: BaseException) -> str:
    """One line about a database error; libpq messages never contain the password."""
    source = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = [line.strip() for line in str(source).splitlines() if line.strip()]
    return lines[0] if lines else type(source).__name__


@dataclass
class Runtime:
    """Mutable state shared by the lifespan, the routes and the signal handler."""

    settings: Settings
    pool: Pool | None = None
    engine: Engine | None = None
    probe_engine: Engine | None = None
    revision: str | None = None
    draining: bool = False
    probe_limiter: anyio.CapacityLimiter | None = None
    migrated: threading.Event = field(default_factory=threading.Event)
    stopping: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    async def start(self) -> None:
        """Open the pool (its connections are made in the background, so a database that
        is away does not stop the start) and migrate in a thread of its own."""
        self.engine = build_engine(self.settings)
        self.probe_engine = build_probe_engine(self.settings)
        self.pool = build_pool(self.settings)
        await self.pool.open(wait=False)
        self._thread = threading.Thread(target=self._prepare, name="migrations", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=self.settings.db_connect_timeout + 1)
        if self.pool is not None:
            await self.pool.close()
        for engine in (self.engine, self.probe_engine):
            if engine is not None:
                engine.dispose()

    def pool_in_use(self) -> int | None:
        return pool_in_use(self.pool) if self.pool is not None else None

    def _prepare(self) -> None:
        """Bring the schema to head (or wait for a Job to), retrying while the DB is away."""
        assert self.engine is not None
        settings = self.settings
        while not self.stopping.is_set():
            try:
                if settings.migrate_on_startup:
                    self.revision = migrate(self.engine, settings.alembic_ini).after
                else:
                    head = head_revision(settings.alembic_ini)
                    self.revision = current_revision(self.engine)
                    if self.revision != head:
                        raise RuntimeError(f"database at {self.revision}, waiting for {head}")
                self.migrated.set()
                return
            except SQLAlchemyError as exc:
                log.warning(
                    "database %s not ready (retrying in %.0fs): %s",
                    settings.describe_database(),
                    settings.migration_retry_seconds,
                    describe_db_error(exc),
                )
            except Exception as exc:
                log.error(
                    "migrations failed (retrying in %.0fs): %s",
                    settings.migration_retry_seconds,
                    describe_db_error(exc),
                )
            self.stopping.wait(settings.migration_retry_seconds)
