"""The database engine (built on startup, never at import) and request sessions."""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from student_api.core.config import Settings


def build_engine(settings: Settings) -> Engine:
    """A pooled engine for ``settings``; connections are checked before use after an outage."""
    return create_engine(
        settings.database_url(),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout,
        pool_pre_ping=True,
        connect_args={
            "connect_timeout": settings.db_connect_timeout,
            "application_name": "student-api",
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
