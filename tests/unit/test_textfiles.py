"""Files as Windows editors save them, kept here as their exact bytes, through every reader.

Each reader of a user's file (secrets/ via the settings and via ``inv secrets.*``, ``.env``,
the templates of ``secrets.init``) must give the same value from the same bytes.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from ops import textfiles
from ops.config import load_settings
from ops.errors import FileError
from ops.secrets import DOCKERCONFIGJSON, db_secret, pull_secret, read_value
from tests.support.inv import clean_env, run_inv

ROOT = Path(__file__).resolve().parents[2]

# "s3cret-pä$$" as Windows editors write it (ä is U+00E4), one line, with its line ending.
VALUE = "s3cret-pä$$"
SAVED = {
    # Notepad (Windows 10 1903+) "UTF-8": no BOM, CRLF
    "notepad-utf8-crlf": b"s3cret-p\xc3\xa4$$\r\n",
    # Notepad "UTF-8 with BOM" (its default before 1903), CRLF
    "notepad-utf8-bom-crlf": b"\xef\xbb\xbfs3cret-p\xc3\xa4$$\r\n",
    # Notepad "UTF-8 with BOM", no line ending at all
    "notepad-utf8-bom-bare": b"\xef\xbb\xbfs3cret-p\xc3\xa4$$",
    # Notepad "Unicode" = UTF-16 LE with BOM, CRLF
    "notepad-unicode-crlf": (
        b"\xff\xfes\x003\x00c\x00r\x00e\x00t\x00-\x00p\x00\xe4\x00$\x00$\x00\r\x00\n\x00"
    ),
    # Notepad "Unicode big endian" = UTF-16 BE with BOM, CRLF
    "notepad-unicode-be-crlf": (
        b"\xfe\xff\x00s\x003\x00c\x00r\x00e\x00t\x00-\x00p\x00\xe4\x00$\x00$\x00\r\x00\n"
    ),
    # PowerShell 5.1 `"..." > file` (UTF-16 LE with BOM, CRLF): the same bytes as Notepad's
    "powershell51-redirect": (
        b"\xff\xfes\x003\x00c\x00r\x00e\x00t\x00-\x00p\x00\xe4\x00$\x00$\x00\r\x00\n\x00"
    ),
    # PowerShell 7 / git / VS Code: UTF-8 without BOM, LF
    "utf8-lf": b"s3cret-p\xc3\xa4$$\n",
    # an old Mac editor: a lone CR
    "utf8-cr": b"s3cret-p\xc3\xa4$$\r",
}


@pytest.mark.parametrize("saved", SAVED.values(), ids=SAVED.keys())
def test_every_windows_encoding_gives_the_same_value(saved: bytes, tmp_path: Path) -> None:
    path = tmp_path / "db_password.txt"
    path.write_bytes(saved)
    assert textfiles.read_value(path) == VALUE


@pytest.mark.parametrize("saved", SAVED.values(), ids=SAVED.keys())
def test_every_reader_agrees(saved: bytes, tmp_path: Path) -> None:
    folder = tmp_path / "secrets"
    folder.mkdir()
    for name in ("db_username", "db_password", "registry_username", "registry_password"):
        (folder / f"{name}.txt").write_bytes(saved)
    empty = tmp_path / "empty.env"
    empty.write_bytes(b"")
    settings = load_settings({"secrets_dir": str(folder)}, env_file=empty, environ={})

    assert settings.registry_username == VALUE and settings.registry_password == VALUE
    assert read_value(folder / "db_password.txt") == VALUE
    db = db_secret(settings)
    assert db.data["username"] == db.data["password"] == VALUE.encode()
    regcred = json.loads(pull_secret(settings).data[DOCKERCONFIGJSON])
    auth = base64.b64decode(regcred["auths"]["localhost:30002"]["auth"])
    assert auth == f"{VALUE}:{VALUE}".encode()  # no BOM, no CR, in the pull secret either


DOTENV = {
    "notepad-utf8-bom-crlf": (
        b"\xef\xbb\xbfMANIFEST_NAMESPACE=staging\r\nMANIFEST_DATABASE=studentdb\r\n"
    ),
    "notepad-unicode-crlf": b"\xff\xfe"
    + "MANIFEST_NAMESPACE=staging\r\nMANIFEST_DATABASE=studentdb\r\n".encode("utf-16-le"),
    "utf8-lf": b"MANIFEST_NAMESPACE=staging\nMANIFEST_DATABASE=studentdb\n",
}


@pytest.mark.parametrize("saved", DOTENV.values(), ids=DOTENV.keys())
def test_dotenv_in_every_encoding(saved: bytes, tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_bytes(saved)
    settings = load_settings(env_file=env, environ={})
    # The first line is the one a BOM would spoil ("\ufeffMANIFEST_NAMESPACE" is no setting).
    assert (settings.namespace, settings.source_of("namespace")) == ("staging", ".env")
    assert settings.database == "studentdb"


REFUSED = {
    "two lines": (b"first\r\nsecond\r\n", "holds more than one line"),
    "blank line after": (b"value\r\n\r\n", "holds more than one line"),
    "utf16 without bom": ("value\r\n".encode("utf-16-le"), "UTF-16 without a byte order mark"),
    "ansi windows-1252": (b"s3cret-p\xe4$$\r\n", "is not UTF-8 text"),
    "nul inside": (b"val\x00ue\n", "contains a NUL"),
    "broken utf16": (b"\xff\xfev\x00a\x00\x00\xd8", "is not UTF-16 LE text"),
}


@pytest.mark.parametrize(("saved", "reason"), REFUSED.values(), ids=REFUSED.keys())
def test_refused_files_name_the_file(saved: bytes, reason: str, tmp_path: Path) -> None:
    path = tmp_path / "registry_password.txt"
    path.write_bytes(saved)
    with pytest.raises(FileError) as caught:
        textfiles.read_value(path)
    assert reason in caught.value.message and str(path) in caught.value.message
    assert caught.value.exit_code == 2


def test_only_the_line_ending_goes(tmp_path: Path) -> None:
    path = tmp_path / "v.txt"
    path.write_bytes(b"  spaces kept\t\r\n")
    assert textfiles.read_value(path) == "  spaces kept\t"


def test_a_folder_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(FileError, match="is a folder"):
        textfiles.read_value(tmp_path)


def test_unicode_registry_password_is_one_line_not_unexpected(tmp_path: Path) -> None:
    """Seen: a UTF-16 registry password file gave `unexpected UnicodeDecodeError`."""
    folder = tmp_path / "secrets"
    folder.mkdir()
    (folder / "registry_password.txt").write_bytes("pw\r\n".encode("utf-16-le"))  # no BOM
    env = clean_env()
    env.update(COLUMNS="200", MANIFEST_SECRETS_DIR=str(folder))
    (tmp_path / ".env").write_bytes(b"")
    done = run_inv("config", env=env, cwd=tmp_path, timeout=60)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "registry_password.txt looks like UTF-16 without a byte order mark" in lines[0]
    assert "unexpected" not in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "encode",
    [
        lambda text: b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode(),  # Notepad UTF-8 BOM
        lambda text: b"\xff\xfe" + text.replace("\n", "\r\n").encode("utf-16-le"),  # "Unicode"
    ],
    ids=["notepad-utf8-bom-crlf", "notepad-unicode-crlf"],
)
def test_an_age_identity_saved_by_notepad(encode: object, tmp_path: Path) -> None:
    from ops import agecrypt

    pair = agecrypt.generate()
    path = tmp_path / "backup_identity.txt"
    path.write_bytes(encode(f"# created: today\n{pair.identity}\n"))  # type: ignore[operator]
    identities = agecrypt.read_identities(path)
    assert agecrypt.public_keys(identities) == [pair.recipient]
