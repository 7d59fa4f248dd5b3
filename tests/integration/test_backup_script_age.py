"""The backup daemon's script encrypting with Debian's age, against a real PostgreSQL 15."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ops import agecrypt
from tests.integration.test_backup_script import (  # noqa: F401 (fixtures)
    backup_files,
    backups,
    make_old_backups,
    restore_with_psql,
    run,
    shell,
    students,
)
from tests.support.postgres import PostgresServer
from tests.support.services import require

pytestmark = pytest.mark.integration

NAME = re.compile(r"continuous-\d{8}-\d{6}\.sql\.age")


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    """(recipients file as the ConfigMap mounts it, identity file that stays with us)."""
    require(shutil.which("age") is not None, "the age tool is not installed (apt-get install age)")
    pair = agecrypt.generate()
    identity = tmp_path / "identity.txt"
    agecrypt.write_identity_file(identity, pair)
    recipients = tmp_path / "recipients.txt"
    recipients.write_text(f"# the team's keys\n\n{pair.recipient}\n")
    return recipients, identity


def test_once_encrypts_and_the_age_cli_opens_it(
    shell, backups, postgres_server: PostgresServer, students, keys, tmp_path
) -> None:
    recipients, identity = keys
    result = run(
        shell, "once", backups, postgres_server, students, BACKUP_RECIPIENTS_FILE=str(recipients)
    )

    assert result.returncode == 0, result.stdout + result.stderr
    (dump,) = [n for n in backup_files(backups) if n.endswith(".age")]
    assert NAME.fullmatch(dump)
    assert backup_files(backups) == [dump, f"{dump}.sha256"]
    data = (backups / dump).read_bytes()
    assert agecrypt.is_encrypted(data)
    # Nothing readable on the volume: no row, no SQL.
    for plain in (b"Erika", b"Max\t25", b"CREATE TABLE", b"PostgreSQL database dump"):
        assert plain not in data
    sidecar = (backups / f"{dump}.sha256").read_text()
    assert sidecar == f"{hashlib.sha256(data).hexdigest()}  {dump}\n"
    assert f" backup ok file={dump} " in result.stdout

    opened = subprocess.run(
        ["age", "-d", "-i", str(identity), str(backups / dump)], capture_output=True, check=True
    ).stdout.decode()
    assert "Max\t25" in opened and "Erika\t31" in opened
    assert "-- PostgreSQL database dump complete" in opened.splitlines()[-5:]

    # ... and it restores over the live database, as --from-daemon does after decrypting.
    plain = tmp_path / "decrypted.sql"
    plain.write_text(opened)
    postgres_server.psql("UPDATE student SET age = 99", students)
    restore_with_psql(postgres_server, plain, students)
    rows = postgres_server.psql("SELECT name, age FROM student ORDER BY id", students)
    assert "Max|25" in rows and "Erika|31" in rows and "99" not in rows


def test_retention_counts_encrypted_backups(
    shell, backups, postgres_server: PostgresServer, students, keys
) -> None:
    recipients, _ = keys
    old = make_old_backups(backups, 10)
    result = run(
        shell, "once", backups, postgres_server, students, BACKUP_RECIPIENTS_FILE=str(recipients)
    )
    assert result.returncode == 0, result.stdout
    assert "kept=10 deleted=1" in result.stdout
    names = backup_files(backups)
    assert old[0] not in names and sum(n.endswith(".age") for n in names) == 1


def test_a_comment_only_recipients_file_means_plain_dumps(
    shell, backups, postgres_server: PostgresServer, students, tmp_path
) -> None:
    recipients = tmp_path / "recipients.txt"
    recipients.write_text("# no keys yet\n\n")
    result = run(
        shell, "once", backups, postgres_server, students, BACKUP_RECIPIENTS_FILE=str(recipients)
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (dump,) = [n for n in backup_files(backups) if not n.endswith(".sha256")]
    assert dump.endswith(".sql")


def test_a_failing_pg_dump_keeps_no_ciphertext(
    shell, backups, postgres_server: PostgresServer, students, keys
) -> None:
    recipients, _ = keys
    make_old_backups(backups, 3)
    before = backup_files(backups)
    result = run(
        shell,
        "once",
        backups,
        postgres_server,
        students,
        BACKUP_RECIPIENTS_FILE=str(recipients),
        PGDATABASE="no_such_database",
    )
    assert result.returncode == 1
    assert "pg_dump exited" in result.stdout and "nothing deleted" in result.stdout
    assert backup_files(backups) == before


def without_age(tmp_path: Path) -> str:
    """A PATH with every tool of /usr/bin and /bin but age."""
    fake = tmp_path / "no-age-bin"
    fake.mkdir()
    for folder in ("/usr/bin", "/bin"):
        for tool in os.listdir(folder):
            link = fake / tool
            if not tool.startswith("age") and not link.exists():
                link.symlink_to(Path(folder) / tool)
    return str(fake)


@pytest.mark.parametrize("problem", ["bad-key", "no-age"])
def test_recipients_without_a_working_age_stop_before_any_dump(
    shell, backups, postgres_server: PostgresServer, students, keys, tmp_path, problem
) -> None:
    recipients, _ = keys
    extra = {"BACKUP_RECIPIENTS_FILE": str(recipients)}
    if problem == "bad-key":
        recipients.write_text("age1thisisnotakey\n")
    else:
        extra["PATH"] = f"{postgres_server.client_bindir}:{without_age(tmp_path)}"
    make_old_backups(backups, 2)
    before = backup_files(backups)

    result = run(shell, "once", backups, postgres_server, students, **extra)

    assert result.returncode == 2, result.stdout + result.stderr
    assert " backup error " in result.stdout
    assert ("no age" if problem == "no-age" else "age refuses") in result.stdout
    assert backup_files(backups) == before
