"""Encrypted backups (age) through the real data path: a real PostgreSQL 15 and its tools
through ``LocalRunner``, the same code the tasks run against the pod."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest

from ops import agecrypt
from ops.backups.dump import take_backup
from ops.backups.files import BackupInfo, sidecar_of, verify_backup
from ops.backups.restore import drill, restore_backup
from ops.errors import BackupKeyError, CorruptBackup, RestoreFailed
from ops.execstream import LocalRunner
from tests.integration import test_backup_data_path as data_path
from tests.support.services import require

pytestmark = pytest.mark.integration

# The same fixtures as the unencrypted data path (pytest finds them as module attributes).
tools = data_path.tools
env = data_path.env
db = data_path.db
source = data_path.source

MARKER = "Zyxwvutsrqpo-Marker-Student-4711"
FORMATS = data_path.FORMATS


@pytest.fixture
def key(tmp_path):
    pair = agecrypt.generate()
    path = tmp_path.parent / f"{tmp_path.name}-identity.txt"
    agecrypt.write_identity_file(path, pair)
    return pair.recipient, agecrypt.read_identities(path), path


@pytest.mark.parametrize("fmt", FORMATS)
def test_encrypted_round_trip_restores_an_identical_database(
    tmp_path, postgres_server, source, env, key, fmt
):
    recipient, identities, _ = key
    path, info = take_backup(source, backups_dir=tmp_path, fmt=fmt, recipients=[recipient])
    assert path.name.endswith((".dump.age", ".sql.age"))
    assert agecrypt.file_is_encrypted(path)
    assert info.encryption == "age" and info.recipients == (recipient,)
    assert info.size == path.stat().st_size
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert BackupInfo.read(sidecar_of(path)) == info
    assert info.server_version.startswith("15")
    assert b"name 1" not in path.read_bytes()

    # Without the identity: the ciphertext against its sidecar, and no more.
    blind = verify_backup(path, full_reader=None)
    assert blind.encrypted and blind.plain_size is None
    assert "sha256 matches the sidecar" in blind.checks
    # With it: decrypted in full and read by pg_restore (custom) or its trailer (plain).
    full = verify_backup(path, full_reader=LocalRunner(env=env), identities=identities)
    assert full.header.format == fmt and full.plain_size and full.plain_size > info.size // 2

    fresh = postgres_server.create_database(f"{source.database}_copy")
    try:
        target = replace(source, database=fresh)
        report = restore_backup(
            path,
            target,
            full_reader=None,
            backups_dir=tmp_path,
            safety_backup=False,
            identities=identities,
        )
        assert report.tables == {"public.blobs": 2000, "public.student": 20000}
        assert data_path.plain_sql(postgres_server, fresh) == data_path.plain_sql(
            postgres_server, source.database
        )
    finally:
        postgres_server.drop_database(fresh)


def test_the_age_cli_opens_our_backup(tmp_path, source, env, key):
    require(shutil.which("age") is not None, "the age tool is not installed (apt-get install age)")
    recipient, _, identity_file = key
    path, _ = take_backup(source, backups_dir=tmp_path, recipients=[recipient])
    opened = tmp_path / "opened.dump"
    subprocess.run(
        ["age", "-d", "-i", str(identity_file), "-o", str(opened), str(path)], check=True
    )
    assert opened.read_bytes()[:5] == b"PGDMP"
    listing = subprocess.run(
        ["pg_restore", "--list", str(opened)], capture_output=True, text=True, check=True
    ).stdout
    assert "TABLE DATA public student" in listing


def test_no_plaintext_byte_reaches_the_folder_while_the_backup_streams(
    tmp_path, postgres_server, source, db, key
):
    """A marker row is written to disk nowhere, not even in the .part, at any moment."""
    recipient, identities, _ = key
    postgres_server.psql(
        f"INSERT INTO student VALUES (999999, '{MARKER}', 33);"
        # enough data that the stream takes many chunks
        "CREATE TABLE filler AS SELECT g, repeat(md5(g::text), 4) AS t "
        "FROM generate_series(1, 60000) g;",
        db,
    )
    folder = tmp_path / "backups"
    marker = MARKER.encode()
    scans = {"scans": 0, "saw_part": 0, "bytes": 0}

    def scan() -> None:
        for f in folder.iterdir() if folder.exists() else ():
            data = f.read_bytes()
            assert marker not in data, f"plaintext of the marker row in {f.name}"
            if f.name.endswith(".part"):
                scans["saw_part"] += 1
        scans["scans"] += 1

    @contextmanager
    def scanning_progress(_description, _total):
        def advance(n: int) -> None:
            scans["bytes"] += n
            scan()  # while pg_dump is still streaming into the .part

        yield advance

    path, _ = take_backup(
        source, backups_dir=folder, recipients=[recipient], progress=scanning_progress
    )
    scan()
    assert scans["scans"] > 10 and scans["saw_part"] > 10, scans
    # ... and the marker is in the backup, for whoever holds the identity.
    fresh = postgres_server.create_database(f"{db}_marker")
    try:
        restore_backup(
            path,
            replace(source, database=fresh),
            full_reader=None,
            backups_dir=folder,
            safety_backup=False,
            identities=identities,
        )
        assert MARKER in postgres_server.psql("SELECT name FROM student WHERE id = 999999", fresh)
    finally:
        postgres_server.drop_database(fresh)


def altered_with_a_matching_sidecar(path: Path) -> None:
    """Flip one ciphertext byte mid-file and fix the sidecar too, as someone who can write
    both would: only age's authentication can catch it."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    info = BackupInfo.read(sidecar_of(path))
    replace(info, sha256=hashlib.sha256(bytes(data)).hexdigest()).write(sidecar_of(path))


@pytest.mark.parametrize("case", ["no-identity", "wrong-identity", "tampered"])
def test_key_and_tamper_errors_come_before_the_database_is_touched(
    tmp_path, postgres_server, source, db, key, case
):
    recipient, identities, _ = key
    folder = tmp_path / "backups"
    path, _ = take_backup(source, backups_dir=folder, recipients=[recipient])
    expected: type[Exception] = BackupKeyError
    if case == "wrong-identity":
        other = tmp_path / "other.txt"
        agecrypt.write_identity_file(other, agecrypt.generate())
        identities = agecrypt.read_identities(other)
    elif case == "no-identity":
        identities = None
    else:  # one flipped byte; its sidecar's sha256 no longer matches
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
        expected = CorruptBackup
    postgres_server.psql("UPDATE student SET age = 77 WHERE id = 1", db)
    before = data_path.counts(postgres_server, db)

    with pytest.raises(expected) as info:
        restore_backup(path, source, full_reader=None, backups_dir=folder, identities=identities)

    if case == "wrong-identity":
        assert "not one of the file's recipients" in info.value.message
        assert recipient in info.value.message
    assert data_path.counts(postgres_server, db) == before
    # A key problem is found before anything else; a tampered file as it streams (its
    # sha256, and age's authentication): after the safety backup, before any COMMIT.
    assert len(list(folder.glob("*.age"))) == 1
    assert len(list(folder.glob("*.dump"))) == (1 if case == "tampered" else 0)  # the safety one


@pytest.mark.parametrize("sidecar", ["forged", "none"])
def test_ciphertext_altered_where_no_sidecar_can_tell_never_changes_the_database(
    tmp_path, postgres_server, source, db, key, sidecar
):
    """Altered with a sidecar rewritten to match (or without one): age's authentication
    catches it, before the database is touched without a sidecar (a full decryption
    first), during the stream with a forged one (the transaction never commits)."""
    recipient, identities, _ = key
    folder = tmp_path / "backups"
    path, _ = take_backup(source, backups_dir=folder, recipients=[recipient])
    if sidecar == "forged":
        altered_with_a_matching_sidecar(path)
    else:
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
        sidecar_of(path).unlink()
    postgres_server.psql("UPDATE student SET age = 77 WHERE id = 1", db)
    before = data_path.counts(postgres_server, db)

    with pytest.raises((CorruptBackup, RestoreFailed)) as info:
        restore_backup(
            path,
            source,
            full_reader=None,
            backups_dir=folder,
            identities=identities,
            require_sidecar=False,
            safety_backup=False,
        )

    assert "authentication" in str(info.value), info.value
    assert data_path.counts(postgres_server, db) == before


def test_safety_backup_and_drill_of_an_encrypted_backup(tmp_path, postgres_server, source, db, key):
    recipient, identities, _ = key
    before = data_path.counts(postgres_server, db)
    path, _ = take_backup(source, backups_dir=tmp_path, recipients=[recipient])
    report = drill(path, source, identities=identities)
    assert report.restored == report.live == {"public.blobs": 2000, "public.student": 20000}
    restored = restore_backup(
        path,
        source,
        full_reader=None,
        backups_dir=tmp_path,
        identities=identities,
        recipients=[recipient],
    )
    assert restored.safety_backup is not None
    assert agecrypt.file_is_encrypted(restored.safety_backup)
    assert data_path.counts(postgres_server, db) == before
    with pytest.raises(BackupKeyError):
        drill(path, source)
