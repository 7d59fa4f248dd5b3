"""Alembic environment: uses the connection handed over by the app, else builds one."""

from __future__ import annotations

from logging.config import fileConfig

from sqlalchemy import Connection

from alembic import context
from student_api.core.config import get_settings
from student_api.core.db import build_engine
from student_api.models import Base

config = context.config
target_metadata = Base.metadata


def run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()


given = config.attributes.get("connection")
if given is not None:
    # Called by student_api.core.migrations inside its locked transaction.
    run(given)
else:
    # The alembic command line: log as alembic.ini says and connect with the app's settings.
    if config.config_file_name is not None:
        fileConfig(config.config_file_name)
    if context.is_offline_mode():
        context.configure(
            url=get_settings().database_url().render_as_string(hide_password=True),
            target_metadata=target_metadata,
            literal_binds=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    else:
        engine = build_engine(get_settings())
        try:
            with engine.connect() as conn:
                run(conn)
                conn.commit()
        finally:
            engine.dispose()
