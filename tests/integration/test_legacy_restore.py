"""An old script's backup, restored into a real PostgreSQL: the data is the original's.

``backup-now.ps1`` wrote ``pg_dump`` through Windows PowerShell 5.1's ``>`` (UTF-16 LE,
CRLF, pg_dump's UTF-8 decoded with code page 850): ``inv backup.import`` must give back
pg_dump's bytes, so that values with non-ASCII text, tabs, backslashes, carriage returns
and embedded newlines come back exactly.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ops.backups.dump import Source
from ops.backups.legacy import import_backup
from ops.backups.restore import restore_backup
from ops.execstream import LocalRunner
from tests.support.postgres import PostgresServer
from tests.support.services import require
from tests.support.windows import powershell51_redirect

pytestmark = pytest.mark.integration

TRICKY = (
    "CREATE TABLE student (id int PRIMARY KEY, name text NOT NULL, note text, age int);"
    "INSERT INTO student VALUES "
    "(1, 'Max Müller', 'Ä Ö Ü ß € \u2013 \u201cquotes\u201d 日本 😀', 25),"
    "(2, E'tab\\there', E'back\\\\slash \\\\N not null', 31),"
    "(3, E'two\\nlines', E'windows\\r\\nline and lone\\rcr', 22),"
    "(4, 'trailing space ', NULL, NULL);"
    "COMMENT ON TABLE student IS E'Studierende\\nzweite Zeile, Größe';"
    "CREATE FUNCTION greet(n text) RETURNS text LANGUAGE sql AS $$ SELECT 'Grüß ' || n $$;"
)


def dump(server: PostgresServer, database: str) -> bytes:
    """pg_dump's plain output, as the old script ran it (no --clean), per-run keys removed."""
    out = subprocess.run(
        ["pg_dump", "--format=plain", "--no-owner", "-d", database],
        env=server.env(database),
        capture_output=True,
        check=True,
    ).stdout
    return re.sub(rb"^\\(un)?restrict \S+$", b"", out, flags=re.M)


def rows(server: PostgresServer, database: str) -> str:
    return server.psql(
        "SELECT string_agg(format('%s|%L|%L|%s', id, name, note, age), ';' ORDER BY id) "
        "FROM student",
        database,
    )


@pytest.mark.parametrize("code_page", ["cp850", "cp437"])
def test_a_powershell_dump_restores_identical_data(
    tmp_path: Path, postgres_server: PostgresServer, fresh_database: str, code_page: str
) -> None:
    for tool in ("pg_dump", "psql", "sh"):
        require(shutil.which(tool) is not None, f"{tool} not installed (postgresql-client-15)")
    postgres_server.psql(TRICKY, fresh_database)
    original = dump(postgres_server, fresh_database)
    old = tmp_path / "backup-20250203-1130.sql"
    old.write_bytes(powershell51_redirect(original, code_page))
    assert b"\r\x00\n\x00" in old.read_bytes()  # really UTF-16 with CRLF

    imported = import_backup(old, backups_dir=tmp_path / "backups")
    assert imported.plan.code_page == code_page

    copy = postgres_server.create_database(f"{fresh_database}_copy")
    try:
        env = {
            **postgres_server.env(),
            "POSTGRES_USER": postgres_server.superuser,
            "POSTGRES_PASSWORD": postgres_server.password,
        }
        target = Source(
            runner=LocalRunner(env=env), database=copy, context="local", namespace="-", pod="-"
        )
        restore_backup(
            imported.path, target, full_reader=None, backups_dir=tmp_path, safety_backup=False
        )
        assert rows(postgres_server, copy) == rows(postgres_server, fresh_database)
        assert "Müller" in rows(postgres_server, copy)
        assert dump(postgres_server, copy) == original
    finally:
        postgres_server.drop_database(copy)
