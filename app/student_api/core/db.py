"""The database engine (built on startup, never at import) and request sessions."""

from __future__ import annotations

import select
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from student_api.core.config import Settings


def closed_while_idle(dbapi_connection: Any) -> bool:
    """Whether a pooled psycopg connection is known dead, without a round trip.

    An idle connection in autocommit has nothing to read: when its socket turns readable,
    the server has said goodbye (a restart or ``pg_terminate_backend`` sends a FATAL message
    and closes it). A silent loss (no FIN) is not seen here, as a ``SELECT 1`` would only
    hang on it too; the request then fails once and SQLAlchemy invalidates the pool.
    """
    if dbapi_connection.closed or dbapi_connection.broken:
        return True
    poller = select.poll()
    poller.register(dbapi_connection.fileno(), select.POLLIN)
    return bool(poller.poll(0))


def _check_on_checkout(dbapi_connection: Any, record: object, proxy: object) -> None:
    # SQLAlchemy's documented pessimistic check: a DisconnectionError raised at checkout
    # makes the pool discard this connection and hand out a fresh one.
    if closed_while_idle(dbapi_connection):
        raise DisconnectionError("the server closed this pooled connection while it was idle")


def build_engine(settings: Settings) -> Engine:
    """A pooled engine for ``settings``; connections the server closed (an outage, a
    restart) are replaced at checkout.

    Not ``pool_pre_ping``: its ``SELECT 1`` is a second round trip for every request (a
    third of the listing's CPU in bench/app_bench.py). The checkout check below asks the
    socket instead, which costs one ``poll()``.
    """
    engine = create_engine(
        settings.database_url(),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout,
        connect_args={
            "connect_timeout": settings.db_connect_timeout,
            "application_name": "student-api",
        },
    )
    event.listen(engine, "checkout", _check_on_checkout)
    return engine


def build_probe_engine(settings: Settings) -> Engine:
    """Unpooled: the readiness probe asks whether the database answers, not whether this
    replica has a free connection (a busy replica must not drop out of the Service)."""
    return create_engine(
        settings.database_url(),
        poolclass=NullPool,
        connect_args={
            "connect_timeout": settings.db_connect_timeout,
            "application_name": "student-api-probe",
        },
    )


def ping(engine: Engine) -> None:
    """Raise if the database does not answer ``SELECT 1``."""
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def pool_in_use(engine: Engine) -> int:
    """Connections currently checked out of the pool."""
    checkedout = getattr(engine.pool, "checkedout", None)
    return int(checkedout()) if callable(checkedout) else 0


def sessions(engine: Engine) -> Iterator[Session]:
    with Session(engine) as session:
        yield session
