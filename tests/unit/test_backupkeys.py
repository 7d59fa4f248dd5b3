"""Backup keys from the settings, and `inv backup.keygen`."""

from __future__ import annotations

import pytest

from ops import agecrypt, backupkeys
from ops.config import load_settings
from ops.errors import BackupKeyError, ConfigError
from tests.unit.test_backup_tasks import inv, one_error_line


@pytest.fixture
def two_keys():
    return agecrypt.generate().recipient, agecrypt.generate().recipient


def test_recipients_file_one_per_line_with_comments(tmp_path, two_keys):
    a, b = two_keys
    (tmp_path / "backup_recipients.txt").write_text(f"# team\n{a}\n\n# ops laptop\n{b}\n")
    s = load_settings({"secrets_dir": str(tmp_path)}, environ={})
    assert s.backup_recipients == (a, b)
    assert s.source_of("backup_recipients") == "secrets/"
    assert backupkeys.recipients(s) == [a, b]


def test_environment_wins_over_the_file_and_takes_commas(tmp_path, two_keys):
    a, b = two_keys
    (tmp_path / "backup_recipients.txt").write_text(f"{a}\n")
    s = load_settings(
        {"secrets_dir": str(tmp_path)}, environ={"MANIFEST_BACKUP_RECIPIENTS": f"{b}, {a}"}
    )
    assert s.backup_recipients == (b, a)
    assert s.source_of("backup_recipients") == "environment"


def test_no_recipients_means_no_encryption(tmp_path):
    s = load_settings({"secrets_dir": str(tmp_path)}, environ={})
    assert backupkeys.recipients(s) == []


def test_a_bad_recipient_names_its_file(tmp_path):
    (tmp_path / "backup_recipients.txt").write_text("age1thisisnotakey\n")
    s = load_settings({"secrets_dir": str(tmp_path)}, environ={})
    with pytest.raises(ConfigError, match=r"backup_recipients\.txt: 'age1thisisnotakey'"):
        backupkeys.recipients(s)


def test_identity_missing_is_one_clear_error(tmp_path):
    s = load_settings({"secrets_dir": str(tmp_path)}, environ={})
    with pytest.raises(BackupKeyError, match="no identity is configured") as info:
        backupkeys.identities(s, file="x.dump")
    assert "MANIFEST_BACKUP_IDENTITY_FILE" in info.value.hint
    s = load_settings(
        {"secrets_dir": str(tmp_path)},
        environ={"MANIFEST_BACKUP_IDENTITY_FILE": str(tmp_path / "gone.txt")},
    )
    with pytest.raises(BackupKeyError, match=r"gone\.txt does not exist"):
        backupkeys.identities(s)


def test_identity_from_the_setting_or_secrets(tmp_path):
    pair = agecrypt.generate()
    agecrypt.write_identity_file(tmp_path / "backup_identity.txt", pair)
    s = load_settings({"secrets_dir": str(tmp_path)}, environ={})
    assert agecrypt.public_keys(backupkeys.identities(s)) == [pair.recipient]
    other = agecrypt.generate()
    agecrypt.write_identity_file(tmp_path / "elsewhere.txt", other)
    s = load_settings(
        {"secrets_dir": str(tmp_path)},
        environ={"MANIFEST_BACKUP_IDENTITY_FILE": str(tmp_path / "elsewhere.txt")},
    )
    assert agecrypt.public_keys(backupkeys.identities(s)) == [other.recipient]


def test_keygen_task_writes_the_pair_and_prints_no_secret(tmp_path):
    dry = inv("backup.keygen", "--secrets-dir", str(tmp_path), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert not (tmp_path / "backup_identity.txt").exists()

    result = inv("backup.keygen", "--secrets-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    identity_file = tmp_path / "backup_identity.txt"
    ids = agecrypt.read_identities(identity_file)
    (public,) = agecrypt.public_keys(ids)
    secret = next(
        line for line in identity_file.read_text().splitlines() if line.startswith("AGE-SECRET")
    )
    assert secret not in result.stdout + result.stderr
    assert public in result.stdout
    assert identity_file.stat().st_mode & 0o777 == 0o600
    # backup.now now encrypts to it: the recipients file holds the public key.
    s = load_settings({"secrets_dir": str(tmp_path)}, environ={})
    assert backupkeys.recipients(s) == [public]

    # A second keygen never replaces the key.
    again = inv("backup.keygen", "--secrets-dir", str(tmp_path))
    one_error_line(again, 2, "already exists")
    assert agecrypt.public_keys(agecrypt.read_identities(identity_file)) == [public]
