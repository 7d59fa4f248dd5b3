"""Database access: the async connection pool requests use, and the engines for the rest.

Requests run on a psycopg ``AsyncConnectionPool`` on the event loop (``build_pool``).
Migrations and the odd maintenance statement use a synchronous SQLAlchemy engine that keeps
no connection (``build_engine``), so the pool is the only place connections are held.
"""

from __future__ import annotations

import asyncio
import select
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

from psycopg import AsyncConnection
from psycopg.conninfo import make_conninfo
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from student_api.core.config import Settings

APPLICATION_NAME = "student-api"


class Pool(AsyncConnectionPool[AsyncConnection[TupleRow]]):
    """psycopg's async pool, with a queue in front for requests that find it all in use.

    ``gate`` admits at most ``max_size`` requests into the pool at a time; the rest wait on
    it, an ``asyncio.Semaphore`` (one future each), instead of in the pool's own queue,
    where each waiter costs an ``asyncio.Condition`` and an ``asyncio.wait_for`` task: with
    50 requests in flight over 7 connections, that queue was ~6 % of the listing's py-spy
    samples (bench figures in app/README.md). Take connections with :func:`connection`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = asyncio.Semaphore(self.max_size)


def closed_while_idle(connection: AsyncConnection[TupleRow]) -> bool:
    """Whether a pooled psycopg connection is known dead, without a round trip.

    An idle connection in autocommit has nothing to read: when its socket turns readable,
    the server has said goodbye (a restart or ``pg_terminate_backend`` sends a FATAL message
    and closes it). A silent loss (no FIN) is not seen here, as a ``SELECT 1`` would only
    hang on it too; the request then fails once and the pool discards that connection.
    """
    if connection.closed or connection.broken:
        return True
    poller = select.poll()
    poller.register(connection.fileno(), select.POLLIN)
    return bool(poller.poll(0))


@asynccontextmanager
async def connection(pool: Pool) -> AsyncIterator[AsyncConnection[TupleRow]]:
    """A live connection from ``pool`` for one statement; back to the pool afterwards.

    Connections the server closed while they were idle (a restart, an outage,
    ``pg_terminate_backend``) are closed and handed back, which makes the pool discard them
    and open replacements, and the next one is taken at once. Not psycopg_pool's ``check``
    callback: after each failed check it pauses (1 s, 2 s, 4 s ...), so after a database
    restart the first request waited for every dead connection in turn and timed out.
    Waits ``DB_POOL_TIMEOUT`` seconds in all, first for a place at the pool's ``gate``, then
    for the connection (then ``PoolTimeout``).
    """
    deadline = time.monotonic() + pool.timeout
    gate = pool.gate
    if gate.locked():
        try:
            async with asyncio.timeout(pool.timeout):
                await gate.acquire()
        except TimeoutError:
            raise PoolTimeout(f"no free connection within {pool.timeout:g} s") from None
    else:
        await gate.acquire()  # at once: a free place
    try:
        while True:
            conn = await pool.getconn(deadline - time.monotonic())
            if not closed_while_idle(conn):
                break
            await conn.close()
            await pool.putconn(conn)
        try:
            yield conn
        finally:
            await pool.putconn(conn)
    finally:
        gate.release()


def build_pool(settings: Settings) -> Pool:
    """The requests' pool for ``settings``, not opened yet (``await pool.open()`` on startup).

    ``DB_POOL_SIZE`` connections are kept, up to ``DB_MAX_OVERFLOW`` more opened under load
    (closed again after ``max_idle``); a request waits ``DB_POOL_TIMEOUT`` for one (then
    ``PoolTimeout``, a 503). Take connections with :func:`connection`: it replaces those
    the server closed (an outage, a restart) with one ``poll()``, not a ``SELECT 1`` (such
    as ``pool_pre_ping``'s), which would be a second round trip for every request.

    A connection that cannot be made is retried in the background (1 s, 2 s, ...) for
    ``DB_CONNECT_TIMEOUT`` seconds only; then the next request that finds no connection
    starts a new attempt. With psycopg_pool's default (300 s of ever longer pauses) a pool
    emptied by an outage stayed empty for minutes after the database was back.
    """
    conninfo = make_conninfo(
        host=settings.db_host,
        port=settings.db_port,
        dbname=settings.db_name,
        user=settings.db_user,
        password=settings.db_password.get_secret_value(),
        connect_timeout=settings.db_connect_timeout,
        application_name=APPLICATION_NAME,
    )
    return Pool(
        conninfo,
        kwargs={"autocommit": True},
        min_size=settings.db_pool_size,
        max_size=settings.db_pool_size + settings.db_max_overflow,
        timeout=settings.db_pool_timeout,
        reconnect_timeout=settings.db_connect_timeout,
        name=APPLICATION_NAME,
        open=False,
    )


def pool_in_use(pool: Pool) -> int:
    """Connections currently handed out by the pool."""
    stats = pool.get_stats()
    return max(0, stats.get("pool_size", 0) - stats.get("pool_available", 0))


def build_engine(settings: Settings) -> Engine:
    """An engine for migrations and maintenance: each ``connect()`` opens a connection and
    closing it closes it (requests use the pool from ``build_pool``)."""
    return create_engine(
        settings.database_url(),
        poolclass=NullPool,
        connect_args={
            "connect_timeout": settings.db_connect_timeout,
            "application_name": f"{APPLICATION_NAME}-admin",
        },
    )


def build_probe_engine(settings: Settings) -> Engine:
    """Unpooled: the readiness probe asks whether the database answers, not whether this
    replica has a free connection (a busy replica must not drop out of the Service)."""
    return create_engine(
        settings.database_url(),
        poolclass=NullPool,
        connect_args={
            "connect_timeout": settings.db_connect_timeout,
            "application_name": f"{APPLICATION_NAME}-probe",
        },
    )


def ping(engine: Engine) -> None:
    """Raise if the database does not answer ``SELECT 1``."""
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def sessions(engine: Engine) -> Iterator[Session]:
    with Session(engine) as session:
        yield session
