"""Encrypted backups from the command line, without a cluster: verify with and without the
identity, the key and tamper errors as one line, and the list saying which are encrypted."""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import replace
from pathlib import Path

import pytest

from ops import agecrypt
from ops.backups.files import BackupInfo, sidecar_of
from tests.unit.test_backup_files import custom_header
from tests.unit.test_backup_tasks import inv, one_error_line

PLAIN = (
    b"--\n-- PostgreSQL database dump\n--\n\nSELECT 1;\n\n-- PostgreSQL database dump complete\n\n"
)


def sealed_backup(folder: Path, recipient: str, content: bytes, name: str) -> Path:
    out = io.BytesIO()
    with agecrypt.EncryptingWriter(out, [recipient]) as w:
        w.write(content)
    path = folder / name
    path.write_bytes(out.getvalue())
    BackupInfo(
        file=path.name,
        sha256=hashlib.sha256(out.getvalue()).hexdigest(),
        size=len(out.getvalue()),
        database="studentdb",
        format="plain" if name.endswith(".sql.age") else "custom",
        compression="none",
        server_version="15.18",
        source_context="manifest-lab",
        source_namespace="development",
        source_pod="postgres-0",
        created="2026-11-30T07:00:00+00:00",
        encryption="age",
        recipients=(recipient,),
    ).write(sidecar_of(path))
    return path


@pytest.fixture
def keys(tmp_path):
    secrets_dir = tmp_path / "secrets"
    pair = agecrypt.generate()
    agecrypt.write_identity_file(secrets_dir / "backup_identity.txt", pair)
    return pair, secrets_dir


@pytest.fixture
def run(monkeypatch):
    """``inv`` with secrets/ somewhere else (no identity there unless a test puts one)."""

    def run(*args: str, secrets_dir: Path):
        monkeypatch.setenv("MANIFEST_SECRETS_DIR", str(secrets_dir))
        monkeypatch.delenv("MANIFEST_BACKUP_IDENTITY_FILE", raising=False)
        return inv(*args)

    return run


def test_verify_without_identity_checks_the_ciphertext_only(tmp_path, keys, run):
    pair, _ = keys
    path = sealed_backup(tmp_path, pair.recipient, PLAIN, "x-20261130-070000.sql.age")
    result = run("backup.verify", str(path), secrets_dir=tmp_path / "no-secrets")
    assert result.returncode == 0, result.stderr
    assert "sha256 matches the sidecar" in result.stdout
    assert "age-encrypted to 1 recipient(s)" in result.stdout
    assert "contents not opened: no identity" in result.stdout


def test_verify_with_identity_decrypts_and_checks_the_dump(tmp_path, keys, run):
    pair, secrets_dir = keys
    path = sealed_backup(tmp_path, pair.recipient, PLAIN, "x-20261130-070000.sql.age")
    result = run("backup.verify", str(path), secrets_dir=secrets_dir)
    assert result.returncode == 0, result.stderr
    assert "decrypts, every chunk authenticated (age)" in result.stdout
    assert "plain dump ends with pg_dump's trailer" in result.stdout

    cut = sealed_backup(tmp_path, pair.recipient, PLAIN[:40], "y-20261130-070000.sql.age")
    one_error_line(run("backup.verify", str(cut), secrets_dir=secrets_dir), 3, "cut short")


def test_verify_with_someone_elses_identity_is_one_line(tmp_path, keys, run):
    pair, _ = keys
    other = tmp_path / "other"
    agecrypt.write_identity_file(other / "backup_identity.txt", agecrypt.generate())
    path = sealed_backup(tmp_path, pair.recipient, custom_header(), "x-20261130-070000.dump.age")
    result = run("backup.verify", str(path), "--reader", "skip", secrets_dir=other)
    one_error_line(result, 2, "not one of the file's recipients")
    assert pair.recipient in result.stderr


def test_verify_of_ciphertext_altered_with_its_sidecar_is_corrupt(tmp_path, keys, run):
    pair, secrets_dir = keys
    path = sealed_backup(
        tmp_path, pair.recipient, custom_header() + os.urandom(200_000), "x-1-1.dump.age"
    )
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    info = BackupInfo.read(sidecar_of(path))
    replace(info, sha256=hashlib.sha256(bytes(data)).hexdigest()).write(sidecar_of(path))
    result = run("backup.verify", str(path), "--reader", "skip", secrets_dir=secrets_dir)
    one_error_line(result, 3, "fails age's authentication")


def test_list_says_which_backups_are_encrypted(tmp_path, keys, run):
    pair, secrets_dir = keys
    sealed_backup(tmp_path, pair.recipient, custom_header(), "db-x-20261130-070000.dump.age")
    (tmp_path / "db-x-20261130-060000.dump").write_bytes(custom_header())
    result = run(
        "backup.list", "--local-only", "--backups-dir", str(tmp_path), secrets_dir=secrets_dir
    )
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines() if "db-x-" in line}
    assert "custom, age" in rows["db-x-20261130-070000.dump.age"]
    assert "age" not in rows["db-x-20261130-060000.dump"].split("custom", 1)[1]
