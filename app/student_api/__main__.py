"""``student-api [serve|migrate]``: serve the API (migrating first) or only migrate."""

from __future__ import annotations

import argparse
import logging
import sys

from student_api.core.config import ConfigError, load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="student-api", description=__doc__)
    parser.add_argument(
        "command",
        nargs="?",
        default="serve",
        choices=["serve", "migrate"],
        help="serve (default): migrations in the background, then answer on PORT; "
        "migrate: upgrade the database once and exit (for a Job)",
    )
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"student-api: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s [%(name)s] %(message)s",
        stream=sys.stderr,
    )
    # Our own lines say what the migrations did; alembic's INFO chatter adds nothing.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    if args.command == "migrate":
        from student_api.core.db import build_engine
        from student_api.core.migrations import migrate
        from student_api.core.runtime import describe_db_error

        engine = build_engine(settings)
        try:
            migrate(engine, settings.alembic_ini)
        except Exception as exc:
            print(f"student-api: migration failed: {describe_db_error(exc)}", file=sys.stderr)
            return 1
        finally:
            engine.dispose()
        return 0

    from student_api.server import serve

    serve(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
