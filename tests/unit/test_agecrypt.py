"""ops.agecrypt on bytes: streaming round trips, the age CLI both ways, key and tamper errors."""

from __future__ import annotations

import errno
import io
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ops import agecrypt
from ops.errors import BackupKeyError, ConfigError, CorruptBackup
from tests.support.services import require

MARKER = b"MARKER-ROW-Erika-Mustermann-1987"
FIND_AGE_CLI = agecrypt.age_cli  # before the fixture below replaces it


@pytest.fixture(autouse=True, params=["age CLI", "pyrage"])
def encryptor(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test twice: encrypting with the age CLI (where installed) and with pyrage."""
    if request.param == "age CLI":
        require(agecrypt.age_cli() is not None, "the age CLI is not installed (Debian: age)")
    else:
        monkeypatch.setattr(agecrypt, "age_cli", lambda: None)
    return str(request.param)


def encrypt(data: bytes, recipients: list[str], write_size: int = 256 * 1024) -> bytes:
    out = io.BytesIO()
    with agecrypt.EncryptingWriter(out, recipients) as w:
        for i in range(0, len(data), write_size):
            w.write(data[i : i + write_size])
    return out.getvalue()


def decrypt(ct: bytes, identities: list[object], read_size: int = 100_000) -> bytes:
    out = bytearray()
    with agecrypt.DecryptingReader(io.BytesIO(ct), identities, name="t") as r:
        while chunk := r.read(read_size):
            out += chunk
    return bytes(out)


@pytest.fixture
def pair(tmp_path: Path) -> tuple[agecrypt.KeyPair, Path]:
    p = agecrypt.generate()
    path = tmp_path / "identity.txt"
    agecrypt.write_identity_file(path, p)
    return p, path


@pytest.mark.parametrize("size", [0, 1, 65535, 65536, 65537, 3 * 1024 * 1024 + 7])
def test_round_trip_any_size(pair, size):
    p, path = pair
    data = os.urandom(size)
    ct = encrypt(data, [p.recipient])
    assert agecrypt.is_encrypted(ct)
    assert decrypt(ct, agecrypt.read_identities(path)) == data
    checked = agecrypt.check_stream(io.BytesIO(ct), agecrypt.read_identities(path), name="t")
    assert checked.plain_size == size
    assert checked.head == data[:4096] and checked.tail == data[-4096:]


def test_ciphertext_holds_no_plaintext(pair):
    p, _ = pair
    ct = encrypt(MARKER * 10_000, [p.recipient], write_size=7)
    assert MARKER not in ct and MARKER[:12] not in ct


def test_two_recipients_each_decrypts(tmp_path):
    a, b = agecrypt.generate(), agecrypt.generate()
    ct = encrypt(b"hello" * 1000, [a.recipient, b.recipient])
    for p in (a, b):
        path = tmp_path / f"{p.recipient[:10]}.txt"
        agecrypt.write_identity_file(path, p)
        assert decrypt(ct, agecrypt.read_identities(path)) == b"hello" * 1000


def test_identity_file_is_private_and_never_replaced(pair):
    p, path = pair
    assert path.stat().st_mode & 0o777 == 0o600
    assert agecrypt.public_keys(agecrypt.read_identities(path)) == [p.recipient]
    with pytest.raises(FileExistsError):
        agecrypt.write_identity_file(path, agecrypt.generate())
    assert p.identity in path.read_text()


def test_wrong_identity_is_a_key_error(pair, tmp_path):
    p, _ = pair
    other = tmp_path / "other.txt"
    agecrypt.write_identity_file(other, agecrypt.generate())
    ct = encrypt(b"x" * 100_000, [p.recipient])
    with pytest.raises(BackupKeyError, match="not one of the file's recipients") as info:
        agecrypt.check_stream(
            io.BytesIO(ct), agecrypt.read_identities(other), name="f", recipients=[p.recipient]
        )
    assert p.recipient in info.value.message
    with pytest.raises(BackupKeyError):
        decrypt(ct, agecrypt.read_identities(other))


def flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :]


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda ct: flip(ct, len(ct) // 2), id="byte-flipped-mid"),
        pytest.param(lambda ct: flip(ct, len(ct) - 1), id="last-tag"),
        pytest.param(lambda ct: ct[: len(ct) - 70_000], id="cut-short"),
        pytest.param(lambda ct: ct[: 65536 * 2 + 200], id="cut-at-chunk"),
    ],
)
def test_tampered_ciphertext_is_corrupt_and_read_never_ends_early(pair, damage):
    p, path = pair
    ids = agecrypt.read_identities(path)
    bad = damage(encrypt(os.urandom(300_000), [p.recipient]))
    with pytest.raises(CorruptBackup, match="authentication"):
        agecrypt.check_stream(io.BytesIO(bad), ids, name="f")
    # A reader raises instead of returning b"" early: a restore never sees a clean end.
    with pytest.raises(CorruptBackup):
        decrypt(bad, ids)


def test_altered_header_with_our_key_listed_is_corrupt(pair):
    p, path = pair
    ct = encrypt(b"y" * 1000, [p.recipient])
    # The first character of the stanza's body (the wrapped file key), still valid base64.
    at = ct.index(b"\n", len(agecrypt.MAGIC)) + 1
    bad = ct[:at] + (b"B" if ct[at : at + 1] != b"B" else b"C") + ct[at + 1 :]
    with pytest.raises(CorruptBackup, match="header was altered"):
        agecrypt.check_stream(
            io.BytesIO(bad), agecrypt.read_identities(path), name="f", recipients=[p.recipient]
        )


def test_not_an_age_file_is_corrupt(pair):
    _, path = pair
    with pytest.raises(CorruptBackup, match="not a readable age file"):
        agecrypt.check_stream(io.BytesIO(b"PGDMP" * 100), agecrypt.read_identities(path), name="f")


def test_bad_keys_are_one_clear_line_without_the_secret(tmp_path):
    with pytest.raises(ConfigError, match="not an age public key"):
        agecrypt.parse_recipient("age1notakey", source="backup_recipients")
    with pytest.raises(BackupKeyError, match="does not exist"):
        agecrypt.read_identities(tmp_path / "missing.txt")
    secret = "AGE-SECRET-KEY-1NOTAKEYBUTSECRETLOOKINGTEXT"
    bad = tmp_path / "bad.txt"
    bad.write_text(f"# comment\n{secret}\n")
    with pytest.raises(BackupKeyError, match="line 2") as info:
        agecrypt.read_identities(bad)
    assert secret not in info.value.message and secret not in info.value.hint
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    with pytest.raises(BackupKeyError, match="holds no age identity"):
        agecrypt.read_identities(empty)
    with pytest.raises(ConfigError, match="no recipients"):
        agecrypt.EncryptingWriter(io.BytesIO(), [])


def test_check_recipients_dedups_and_validates():
    a = agecrypt.generate().recipient
    assert agecrypt.check_recipients([a, f" {a} ", ""]) == [a]
    with pytest.raises(ConfigError):
        agecrypt.check_recipients([a, "ssh-ed25519 AAAAnot"])


class FullDisk:
    """A sink that fails like a full disk after ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        self.limit, self.n = limit, 0

    def write(self, data: bytes) -> int:
        if self.n + len(data) > self.limit:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.n += len(data)
        return len(data)


@pytest.mark.parametrize("limit", [10, 200_000, 1_048_000])
def test_a_failing_sink_is_raised_even_on_the_last_chunk(limit):
    # 1_048_000: only the final flush fails, which pyrage itself would drop silently.
    w = agecrypt.EncryptingWriter(FullDisk(limit), [agecrypt.generate().recipient])
    with pytest.raises(OSError) as info:
        for _ in range(4):
            w.write(b"z" * 262_144)
        w.close()
    assert info.value.errno == errno.ENOSPC


def test_leaving_by_an_exception_stops_the_pump():
    out = io.BytesIO()
    with (
        pytest.raises(KeyboardInterrupt),
        agecrypt.EncryptingWriter(out, [agecrypt.generate().recipient]) as w,
    ):
        w.write(b"a" * 100_000)
        raise KeyboardInterrupt
    assert w._thread.is_alive() is False


def test_memory_stays_bounded_while_streaming():
    # 256 MiB through the writer in 256 KiB writes (as the exec layer writes): the peak RSS
    # must not grow with the stream.
    code = textwrap.dedent(
        """
        import resource, sys
        from ops import agecrypt
        class Null:
            n = 0
            def write(self, b):
                self.n += len(b)
                return len(b)
        sink = Null()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        block = b"q" * 262144
        with agecrypt.EncryptingWriter(sink, [agecrypt.generate().recipient]) as w:
            for _ in range(1024):
                w.write(block)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(after - before, sink.n)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    grown_kib, written = int(out[0]), int(out[1])
    assert written > 256 * 1024 * 1024
    assert grown_kib < 32 * 1024, f"RSS grew by {grown_kib} KiB"


# --- the age command-line tool opens our files, and we open its files -----------------


def age_cli() -> str:
    path = shutil.which("age")
    require(path is not None, "the age command-line tool is not installed (apt-get install age)")
    assert path is not None
    return path


def test_age_cli_decrypts_our_file(pair, tmp_path):
    age = age_cli()
    p, path = pair
    data = MARKER + os.urandom(200_000)
    enc = tmp_path / "b.dump.age"
    enc.write_bytes(encrypt(data, [p.recipient]))
    out = subprocess.run([age, "-d", "-i", str(path), str(enc)], capture_output=True, check=True)
    assert out.stdout == data


def test_we_decrypt_the_age_cli_file_and_its_keys(tmp_path):
    age = age_cli()
    keyfile = tmp_path / "key.txt"
    subprocess.run(["age-keygen", "-o", str(keyfile)], capture_output=True, check=True)
    recipient = subprocess.run(
        ["age-keygen", "-y", str(keyfile)], capture_output=True, text=True, check=True
    ).stdout.strip()
    data = os.urandom(150_000)
    ct = subprocess.run([age, "-r", recipient], input=data, capture_output=True, check=True).stdout
    assert decrypt(ct, agecrypt.read_identities(keyfile)) == data


def test_closing_a_reader_early_stops_its_pump(pair):
    p, path = pair
    ct = encrypt(os.urandom(8 * 1024 * 1024), [p.recipient])
    reader = agecrypt.DecryptingReader(io.BytesIO(ct), agecrypt.read_identities(path), name="t")
    assert len(reader.read(1000)) == 1000
    reader.close()  # the pump is blocked on a full hand-off: it must stop, not hang
    assert not reader._thread.is_alive()


@pytest.mark.parametrize("size", [0, 1, 65535, 65536, 65537, 2 * 65536, 300_001])
def test_plain_size_from_the_ciphertext_size_and_the_head(pair, tmp_path, size):
    p, path = pair
    data = os.urandom(size)
    f = tmp_path / "x.age"
    f.write_bytes(encrypt(data, [p.recipient, agecrypt.generate().recipient]))
    assert agecrypt.plain_size_of(f) == size
    opened = agecrypt.open_head(f, agecrypt.read_identities(path), head=70_000)
    assert opened.head == data[:70_000] and opened.plain_size == size


def test_open_head_refuses_another_key_and_an_impossible_size(pair, tmp_path):
    p, _ = pair
    f = tmp_path / "x.age"
    ct = encrypt(os.urandom(200_000), [p.recipient])
    f.write_bytes(ct)
    other = tmp_path / "other.txt"
    agecrypt.write_identity_file(other, agecrypt.generate())
    with pytest.raises(BackupKeyError, match="not one of the file's recipients"):
        agecrypt.open_head(f, agecrypt.read_identities(other))
    # Cut so that only 5 bytes of a last chunk remain: less than its tag.
    payload_start = ct.index(b"\n", ct.index(b"\n--- ") + 1) + 1 + 16
    f.write_bytes(ct[: payload_start + 3 * (65536 + 16) + 5])
    with pytest.raises(CorruptBackup, match="cannot be that of an age file"):
        agecrypt.plain_size_of(f)


# --- the pumps run in a child process ---------------------------------------------------


def _cpu() -> tuple[float, float]:
    t = os.times()
    return t.user + t.system, t.children_user + t.children_system


def test_the_encryption_runs_beside_the_caller_not_on_its_gil(pair):
    # pyrage holds the GIL while it encrypts: in our process it stopped the thread that
    # reads the dump from the exec stream (backup.now 0.93x plain in bench/backup_bench.py).
    # Now a child encrypts (its CPU shows as our children's; before: 0.00 s) and ours only
    # moves bytes through pipes.
    p, _ = pair
    block = os.urandom(256 * 1024)
    ours, theirs = _cpu()
    with agecrypt.EncryptingWriter(Null(), [p.recipient]) as w:
        for _ in range(512):  # 128 MiB
            w.write(block)
    ours, theirs = _cpu()[0] - ours, _cpu()[1] - theirs
    assert theirs >= 0.02, f"encryption's CPU in a child {theirs:.2f}s, ours {ours:.2f}s"


def test_the_decryption_runs_in_a_child_which_never_sees_the_key_in_argv_or_env(pair):
    p, path = pair
    secret = path.read_text().splitlines()[-1]
    ct = encrypt(os.urandom(4 * 1024 * 1024), [p.recipient])
    with agecrypt.DecryptingReader(
        io.BytesIO(ct), agecrypt.read_identities(path), name="t"
    ) as reader:
        assert len(reader.read(1000)) == 1000
        child = Path(f"/proc/{reader._pump.child.pid}")
        if child.exists():  # Linux: what any process of this user could read
            assert secret.encode() not in (child / "cmdline").read_bytes()
            assert secret.encode() not in (child / "environ").read_bytes()
        while reader.read(1024 * 1024):
            pass
    assert reader._pump.child.returncode == 0


def test_an_openssh_identity_decrypts_through_the_child(tmp_path):
    keygen = shutil.which("ssh-keygen")
    require(keygen is not None, "ssh-keygen (Debian: openssh-client) is not installed")
    key = tmp_path / "id ed25519"  # a space in the name, as in "C:\Users\Erika Muster"
    subprocess.run([str(keygen), "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    recipient = key.with_name(key.name + ".pub").read_text().strip()
    data = MARKER + os.urandom(300_000)
    assert decrypt(encrypt(data, [recipient]), agecrypt.read_identities(key)) == data


def test_another_program_called_age_is_not_taken_for_the_age_cli(tmp_path, monkeypatch):
    other = tmp_path / "age"
    other.write_text("#!/bin/sh\necho 'age: a calculator of ages, 3.0'\n")
    other.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    FIND_AGE_CLI.cache_clear()
    try:
        assert FIND_AGE_CLI() is None
    finally:
        FIND_AGE_CLI.cache_clear()


class Null:
    def write(self, data: bytes) -> int:
        return len(data)
