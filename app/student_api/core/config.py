"""Settings from the environment and the mounted secret files.

Precedence, highest first: environment variables (``DB_USER``, ``DB_PASSWORD``, ...), then
the files in the secrets folder (``/etc/app-secrets/db_user``, ``/etc/app-secrets/db_password``;
folder overridable with ``APP_SECRETS_DIR``), then the defaults below. A non-empty environment
variable therefore wins over a mounted file.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import URL

DEFAULT_SECRETS_DIR = Path("/etc/app-secrets")
_APP_DIR = Path(__file__).resolve().parents[2]


def _default_alembic_ini() -> Path:
    # A source checkout keeps alembic.ini beside the package; the image sets ALEMBIC_INI.
    return _APP_DIR / "alembic.ini"


class ConfigError(Exception):
    """The settings cannot be used; the message is one line that names no secret value."""


class Settings(BaseSettings):
    """Everything the API reads from its environment; built once by :func:`get_settings`."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", case_sensitive=False)

    db_host: str = Field("postgres-service", description="PostgreSQL host (env DB_HOST)")
    db_port: int = Field(5432, ge=1, le=65535, description="PostgreSQL port (env DB_PORT)")
    db_name: str = Field("studentdb", min_length=1, description="database (env DB_NAME)")
    db_user: str = Field(min_length=1, description="env DB_USER or file db_user")
    db_password: SecretStr = Field(min_length=1, description="env DB_PASSWORD or file db_password")
    db_pool_size: int = Field(
        5, ge=1, description="connections kept open per replica (env DB_POOL_SIZE)"
    )
    # 10 replicas (the HPA maximum) x (5 + 2) stays well below PostgreSQL's 100 connections.
    db_max_overflow: int = Field(
        2, ge=0, description="extra connections under load (env DB_MAX_OVERFLOW)"
    )
    db_pool_timeout: float = Field(
        10.0, gt=0, description="seconds to wait for a free connection (env DB_POOL_TIMEOUT)"
    )
    db_connect_timeout: int = Field(
        3, ge=1, description="seconds to open a connection (env DB_CONNECT_TIMEOUT)"
    )
    ready_timeout: float = Field(
        2.0, gt=0, description="seconds /health/ready waits for the database (READY_TIMEOUT)"
    )
    host: str = Field("0.0.0.0", description="listen address (env HOST)")
    port: int = Field(8080, ge=1, le=65535, description="listen port (env PORT)")
    shutdown_delay: float = Field(
        5.0,
        ge=0,
        description="seconds to keep serving, not ready, after SIGTERM so the Service "
        "stops routing here before the listener closes (env SHUTDOWN_DELAY)",
    )
    graceful_timeout: float = Field(
        20.0, gt=0, description="seconds in-flight requests get to finish (GRACEFUL_TIMEOUT)"
    )
    migrate_on_startup: bool = Field(
        True, description="apply migrations when the server starts (MIGRATE_ON_STARTUP)"
    )
    migration_retry_seconds: float = Field(
        2.0, gt=0, description="pause between migration attempts while the DB is away"
    )
    alembic_ini: Path = Field(default_factory=_default_alembic_ini, description="env ALEMBIC_INI")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="env LOG_LEVEL"
    )

    def database_url(self) -> URL:
        """The SQLAlchemy URL; its str() and repr() mask the password."""
        return URL.create(
            "postgresql+psycopg",
            username=self.db_user,
            password=self.db_password.get_secret_value(),
            host=self.db_host,
            port=self.db_port,
            database=self.db_name,
        )

    def describe_database(self) -> str:
        return f"{self.db_user}@{self.db_host}:{self.db_port}/{self.db_name}"


def secrets_dir() -> Path:
    return Path(os.environ.get("APP_SECRETS_DIR", str(DEFAULT_SECRETS_DIR)))


def load_settings() -> Settings:
    """Build the settings, or raise :class:`ConfigError` with one line saying what is missing."""
    folder = secrets_dir()
    try:
        # pydantic-settings warns when the folder is absent; outside Kubernetes that is normal.
        if folder.is_dir():
            return Settings(_secrets_dir=folder)  # type: ignore[call-arg]
        return Settings()  # type: ignore[call-arg]
    except ValidationError as exc:
        raise ConfigError(_explain(exc, folder)) from None


def _explain(exc: ValidationError, folder: Path) -> str:
    problems: list[str] = []
    for error in exc.errors(include_input=False, include_url=False):
        field = str(error["loc"][0]) if error["loc"] else "?"
        if field in ("db_user", "db_password") and error["type"] in (
            "missing",
            "string_too_short",
            "too_short",
        ):
            problems.append(
                f"{field.upper()} is not set (set the env variable or put it in {folder / field})"
            )
        else:
            problems.append(f"{field.upper()}: {error['msg']}")
    return "refusing to start: " + "; ".join(problems)


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, built on first use (never at import)."""
    return load_settings()
