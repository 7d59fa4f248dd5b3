"""What the running app knows about itself: engine, migrations done, draining."""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Concatenate, ParamSpec, TypeVar

import anyio
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from student_api.core.config import Settings
from student_api.core.db import build_engine, build_probe_engine, pool_in_use
from student_api.core.migrations import current_revision, head_revision, migrate

log = logging.getLogger("student_api")

P = ParamSpec("P")
T = TypeVar("T")


def describe_db_error(exc: BaseException) -> str:
    """One line about a database error; libpq messages never contain the password."""
    source = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = [line.strip() for line in str(source).splitlines() if line.strip()]
    return lines[0] if lines else type(source).__name__


@dataclass
class Runtime:
    """Mutable state shared by the lifespan, the routes and the signal handler."""

    settings: Settings
    engine: Engine | None = None
    probe_engine: Engine | None = None
    revision: str | None = None
    draining: bool = False
    probe_limiter: anyio.CapacityLimiter | None = None
    migrated: threading.Event = field(default_factory=threading.Event)
    stopping: threading.Event = field(default_factory=threading.Event)
    db_threads: ThreadPoolExecutor | None = None
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self.engine = build_engine(self.settings)
        self.probe_engine = build_probe_engine(self.settings)
        # One worker thread per pooled connection: threads only ever do database work, so
        # more would queue for a connection while contending for the GIL, and requests
        # beyond the pool would open and close overflow connections again and again (2 %
        # of requests paid a new login in bench/app_bench.py).
        self.db_threads = ThreadPoolExecutor(
            max_workers=self.settings.db_pool_size, thread_name_prefix="db"
        )
        self._thread = threading.Thread(target=self._prepare, name="migrations", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=self.settings.db_connect_timeout + 1)
        if self.db_threads is not None:
            self.db_threads.shutdown(wait=True, cancel_futures=True)
        for engine in (self.engine, self.probe_engine):
            if engine is not None:
                engine.dispose()

    async def run_db(
        self, func: Callable[Concatenate[Engine, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """``func(engine, ...)`` on a database worker thread, awaited on the event loop.

        asyncio's ``run_in_executor`` rather than Starlette's ``run_in_threadpool``: the
        hop costs a third of the CPU (measured 40-50 vs 120-160 us under concurrency).
        """
        assert self.engine is not None and self.db_threads is not None
        call = functools.partial(func, self.engine, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self.db_threads, call)

    def pool_in_use(self) -> int | None:
        return pool_in_use(self.engine) if self.engine is not None else None

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
