"""Backup file handling without a database: names, headers, sidecars, publishing, retention."""

from __future__ import annotations

import os
import struct
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ops.backups.commands import WIPE_DATABASE, dump_command, pg_command, restore_command
from ops.backups.files import BackupInfo, backup_name, prune_local, publish, sidecar_of
from ops.errors import CorruptBackup
from ops.pgformat import read_header


def _int(value: int) -> bytes:
    return bytes([1 if value < 0 else 0]) + struct.pack("<I", abs(value))


def _str(text: str) -> bytes:
    raw = text.encode()
    return _int(len(raw)) + raw


def custom_header(*, fmt: int = 1, minor: int = 14, level: int = 0, db: str = "studentdb") -> bytes:
    head = b"PGDMP" + bytes([1, minor, 0, 4, 8, fmt]) + _int(level)
    head += b"".join(_int(v) for v in (1, 2, 3, 4, 5, 126, 0))
    return head + _str(db) + _str("15.18") + _str("15.18")


def test_custom_header_gives_database_versions_and_compression():
    header = read_header(custom_header(level=6))
    assert (header.format, header.database, header.server_version, header.compression) == (
        "custom",
        "studentdb",
        "15.18",
        "gzip:6",
    )


@pytest.mark.parametrize(
    ("head", "message"),
    [
        pytest.param(b"", "empty", id="empty"),
        pytest.param(b"\x1f\x8b\x08\x00rest", "gzip", id="gzip"),
        pytest.param(b"PK\x03\x04zipfile", "not a pg_dump", id="zip"),
        pytest.param(b"x" * 257 + b"ustar\x0000", "tar archive", id="tar"),
        pytest.param(custom_header(fmt=5), "directory archive", id="directory-toc"),
        pytest.param(custom_header()[:30], "cut short", id="truncated-header"),
        pytest.param(b"SELECT 1;\n", "not a pg_dump", id="random-sql"),
    ],
)
def test_foreign_files_are_rejected_by_their_first_bytes(head, message):
    with pytest.raises(CorruptBackup, match=message):
        read_header(head)


def test_backup_name_follows_the_documented_pattern():
    when = datetime(2026, 11, 26, 7, 5, 9, tzinfo=UTC)
    assert backup_name("studentdb", "docker-desktop", "custom", when) == (
        "studentdb-docker-desktop-20261126-070509.dump"
    )
    assert backup_name("studentdb", "a/b:c", "plain", when).endswith("a_b_c-20261126-070509.sql")


def test_commands_name_credentials_as_variables_never_values():
    for argv in (
        dump_command("studentdb", "custom", 0),
        restore_command("studentdb", "custom"),
        restore_command("studentdb", "plain"),
    ):
        script = argv[2]
        assert '"$POSTGRES_USER' in script or "${POSTGRES_USER" in script
        assert "$POSTGRES_PASSWORD" in script or "${POSTGRES_PASSWORD" in script
        assert "studentdb" in argv[3:]  # the database is a separate word, never in the script
    assert pg_command("psql", "-c", "x; y")[-2:] == ["-c", "x; y"]


def test_custom_restore_is_one_transaction_that_empties_the_database_first():
    argv = restore_command("db", "custom")
    script = argv[2]
    assert argv[3] == "db" and argv[4] == WIPE_DATABASE.decode()
    # BEGIN and the wipe, then pg_restore's SQL; COMMIT only after pg_restore succeeded.
    assert script.index("BEGIN") < script.index("pg_restore") < script.index("COMMIT")
    assert "then printf" in script and "COMMIT" in script.split("else")[0]
    assert "--single-transaction" not in script  # psql would commit a stream cut short
    assert "RAISE EXCEPTION" in argv[5]


def test_sidecar_round_trip(tmp_path: Path):
    info = BackupInfo(
        file="a.dump",
        sha256="0" * 64,
        size=3,
        database="studentdb",
        format="custom",
        compression="none",
        server_version="15",
        source_context="manifest-lab",
        source_namespace="ns",
        source_pod="postgres-0",
        created="2026-11-26T07:00:00+00:00",
    )
    info.write(tmp_path / "a.dump.json")
    assert BackupInfo.read(tmp_path / "a.dump.json") == info
    (tmp_path / "b.dump.json").write_text("{not json")
    with pytest.raises(CorruptBackup, match="unreadable"):
        BackupInfo.read(tmp_path / "b.dump.json")


def test_publish_never_replaces_an_existing_backup(tmp_path: Path):
    (tmp_path / "db-ctx-1.dump").write_bytes(b"first")
    part = tmp_path / "x.part"
    part.write_bytes(b"second")
    final = publish(part, tmp_path, "db-ctx-1.dump")
    assert final.name == "db-ctx-1-2.dump" and final.read_bytes() == b"second"
    assert (tmp_path / "db-ctx-1.dump").read_bytes() == b"first"
    assert not part.exists()


def test_retention_keeps_the_newest_and_never_a_protected_one(tmp_path: Path):
    paths = []
    for i in range(5):
        path = tmp_path / f"db-ctx-{i}.dump"
        path.write_bytes(b"x")
        sidecar_of(path).write_text("{}")
        os.utime(path, (1000 + i, 1000 + i))
        paths.append(path)
    (tmp_path / "in-flight.dump.1234.part").write_bytes(b"partial")
    removed = prune_local(tmp_path, 2, protect=[paths[0]])
    assert sorted(p.name for p in removed) == ["db-ctx-1.dump", "db-ctx-2.dump"]
    assert {p.name for p in tmp_path.glob("*.dump")} == {
        "db-ctx-0.dump",
        "db-ctx-3.dump",
        "db-ctx-4.dump",
    }
    assert not sidecar_of(paths[1]).exists()
    assert (tmp_path / "in-flight.dump.1234.part").exists()


def test_a_backup_of_another_database_is_refused_unless_its_source_is_named():
    """Seen: a dump of A restored into B with --yes, keeping B's own table beside A's data."""
    from ops.backups.restore import cross_database_check
    from ops.errors import WrongDatabase

    assert cross_database_check("studentdb", "studentdb", None) is None
    assert cross_database_check(None, "studentdb", None) is None  # unknown: plain, no sidecar
    with pytest.raises(WrongDatabase, match="backup is of database 'a', but the restore") as e:
        cross_database_check("a", "b", None)
    assert e.value.exit_code == 2 and "--from-database a" in e.value.hint
    with pytest.raises(WrongDatabase, match="not 'c' as --from-database says"):
        cross_database_check("a", "b", "c")
    text = cross_database_check("a", "b", "a")
    assert text is not None and "'a'" in text and "'b'" in text


@pytest.mark.parametrize(
    ("stderr", "killed"),
    [
        ("psql exited with 2: server closed the connection unexpectedly", True),
        ("FATAL: terminating connection because of crash of another server process", True),
        # recorded on the lab cluster: the OOM killer took a process in postgres-0
        ("pg_restore in pod postgres-0 (manifest-lab/ns) exited with 2: Killed", True),
        ("psql exited with 3: ERROR: division by zero", False),
        ('psql exited with 3: ERROR: role "Killed" does not exist', False),
    ],
)
def test_a_killed_process_is_told_apart_from_a_bad_dump(stderr: str, killed: bool) -> None:
    from ops.backups.restore import server_went_away

    assert server_went_away(stderr) is killed
