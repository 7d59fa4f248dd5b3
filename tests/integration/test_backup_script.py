"""The backup daemon's script (k8s/base/backup/backup.sh) against a real PostgreSQL 15.

It runs here exactly as in the pod: ``sh backup.sh once|prune|loop`` with libpq's PG*
variables, pg_dump 15 and coreutils. The shells are the ones the images bring: dash
(Debian, the lab's image) and busybox sh (the Alpine image the seed used).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from ops import agecrypt
from tests.manifests.render import K8S
from tests.support.postgres import PostgresServer
from tests.support.services import require

pytestmark = pytest.mark.integration

SCRIPT = K8S / "base" / "backup" / "backup.sh"
NAME = re.compile(r"continuous-\d{8}-\d{6}\.sql")
SHELLS = {"dash": ["dash"], "busybox": ["busybox", "sh"]}


@pytest.fixture(params=sorted(SHELLS))
def shell(request: pytest.FixtureRequest) -> list[str]:
    argv = SHELLS[request.param]
    require(shutil.which(argv[0]) is not None, f"{argv[0]} is not installed")
    return argv


@pytest.fixture
def students(postgres_server: PostgresServer, fresh_database: str) -> str:
    postgres_server.psql(
        "CREATE TABLE student (id serial PRIMARY KEY, name text NOT NULL, age int);"
        "INSERT INTO student (name, age) VALUES ('Max', 25), ('Erika', 31);",
        fresh_database,
    )
    return fresh_database


def backup_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def make_old_backups(folder: Path, count: int, *, start: int = 1_700_000_000) -> list[str]:
    """``count`` finished backups with sidecars, one minute apart, oldest first."""
    names = []
    for i in range(count):
        name = f"continuous-20240101-{i:06d}.sql"
        (folder / name).write_text(f"-- old backup {i}\n")
        (folder / f"{name}.sha256").write_text(f"{'0' * 64}  {name}\n")
        for path in (folder / name, folder / f"{name}.sha256"):
            os.utime(path, (start + 60 * i, start + 60 * i))
        names.append(name)
    return names


@pytest.fixture
def backups(tmp_path: Path) -> Path:
    folder = tmp_path / "backups"
    folder.mkdir()
    return folder


@dataclass(frozen=True)
class Daemon:
    """backup.sh as the pod runs it: one shell, the backup folder, the test's database."""

    shell: list[str]
    backups: Path
    server: PostgresServer
    database: str

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **self.server.env(self.database),
            "PATH": f"{self.server.client_bindir}:{os.environ['PATH']}",
            "BACKUP_DIR": str(self.backups),
            "TMPDIR": str(self.backups.parent),
            **extra,
        }

    def run(self, mode: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.shell, str(SCRIPT), mode],
            env=self.env(**extra),
            capture_output=True,
            text=True,
            timeout=60,
        )


@pytest.fixture
def daemon(
    shell: list[str], backups: Path, postgres_server: PostgresServer, students: str
) -> Daemon:
    return Daemon(shell=shell, backups=backups, server=postgres_server, database=students)


def test_once_writes_a_verified_dump_with_its_sidecar(daemon: Daemon) -> None:
    result = daemon.run("once")

    assert result.returncode == 0, result.stdout + result.stderr
    (dump,) = [n for n in backup_files(daemon.backups) if n.endswith(".sql")]
    assert NAME.fullmatch(dump)
    assert backup_files(daemon.backups) == [dump, f"{dump}.sha256"]
    check = subprocess.run(
        ["sha256sum", "-c", f"{dump}.sha256"], cwd=daemon.backups, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    text = (daemon.backups / dump).read_text()
    assert "Max\t25" in text and "Erika\t31" in text
    assert "-- PostgreSQL database dump complete" in text.splitlines()[-5:]
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    assert f" backup ok file={dump} " in lines[0]
    assert "kept=1 deleted=0" in lines[0]
    assert daemon.server.password not in result.stdout + result.stderr


def restore_with_psql(server: PostgresServer, dump: Path, database: str) -> None:
    """What an operator does by hand: ``psql -1`` with the dump on stdin."""
    with dump.open("rb") as sql:
        subprocess.run(
            [str(server.bindir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-1"],
            env=server.env(database),
            stdin=sql,
            capture_output=True,
            check=True,
        )


def test_the_dump_restores_into_an_empty_database(daemon: Daemon) -> None:
    assert daemon.run("once").returncode == 0
    (dump,) = daemon.backups.glob("*.sql")
    target = daemon.server.create_database(daemon.database + "_copy")
    try:
        restore_with_psql(daemon.server, dump, target)
        rows = daemon.server.psql("SELECT name, age FROM student ORDER BY id", target)
        assert rows.splitlines() == ["Max|25", "Erika|31"]
    finally:
        daemon.server.drop_database(target)


def test_the_dump_restores_over_the_live_database_it_came_from(daemon: Daemon) -> None:
    assert daemon.run("once").returncode == 0
    (dump,) = daemon.backups.glob("*.sql")
    daemon.server.psql(
        "UPDATE student SET age = 99; INSERT INTO student (name, age) VALUES ('Later', 40)",
        daemon.database,
    )
    restore_with_psql(daemon.server, dump, daemon.database)
    rows = daemon.server.psql("SELECT name, age FROM student ORDER BY id", daemon.database)
    assert rows.splitlines() == ["Max|25", "Erika|31"]


def test_retention_keeps_the_ten_newest_and_never_touches_part_files(daemon: Daemon) -> None:
    old = make_old_backups(daemon.backups, 12)
    (daemon.backups / "upload.dump.part").write_text("an upload in progress")
    (daemon.backups / ".hidden.sql.part").write_text("another one")

    result = daemon.run("once")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "kept=10 deleted=3" in result.stdout
    names = backup_files(daemon.backups)
    (new,) = [n for n in names if n.endswith(".sql") and n not in old]
    survivors = [*old[-9:], new]
    expected = sorted(
        [*survivors, *(f"{n}.sha256" for n in survivors), "upload.dump.part", ".hidden.sql.part"]
    )
    assert names == expected


def test_keep_is_an_environment_setting(daemon: Daemon) -> None:
    old = make_old_backups(daemon.backups, 5)

    result = daemon.run("prune", KEEP="3")

    assert result.returncode == 0, result.stderr
    assert "prune kept=3 deleted=2" in result.stdout
    assert [n for n in backup_files(daemon.backups) if not n.endswith(".sha256")] == old[-3:]


def test_retention_never_prunes_uploaded_backups(daemon: Daemon) -> None:
    """Seen: an upload counted against `keep` and was pruned minutes later."""
    uploads = {
        "studentdb-manifest-lab-20240101-000000.dump": 1_600_000_000,  # older than all
        "before-migration.sql": 1_600_000_100,
        "continuous-notes.sql": 1_600_000_200,  # the prefix, but not the daemon's name
    }
    for name, mtime in uploads.items():
        (daemon.backups / name).write_text("an uploaded backup")
        (daemon.backups / f"{name}.sha256").write_text(f"{'0' * 64}  {name}\n")
        os.utime(daemon.backups / name, (mtime, mtime))
    old = make_old_backups(daemon.backups, 4)
    # An mtime says nothing: the oldest dump touched last is still the oldest.
    os.utime(daemon.backups / old[0], (1_900_000_000, 1_900_000_000))

    for _ in range(2):
        result = daemon.run("once", KEEP="2")
        assert result.returncode == 0, result.stdout + result.stderr
        time.sleep(1.1)  # a new name each second

    names = backup_files(daemon.backups)
    for name in uploads:
        assert name in names and f"{name}.sha256" in names
    own = [n for n in names if NAME.fullmatch(n)]
    assert len(own) == 2 and not set(own) & set(old)  # the two new ones


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param({"PGDATABASE": "no_such_database"}, id="unknown-database"),
        pytest.param({"PGPASSWORD": "wrong-password"}, id="wrong-password"),
        pytest.param({"PGPORT": "1"}, id="server-unreachable"),
    ],
)
def test_a_failing_pg_dump_keeps_every_previous_backup(
    daemon: Daemon, failure: dict[str, str]
) -> None:
    make_old_backups(daemon.backups, 10)
    before = {p.name: p.read_bytes() for p in daemon.backups.iterdir()}

    result = daemon.run("once", **failure)

    assert result.returncode == 1
    after = {p.name: p.read_bytes() for p in daemon.backups.iterdir()}
    assert after == before, "nothing added, nothing deleted, nothing changed; no .part left"
    (line,) = result.stdout.splitlines()
    assert " backup FAILED file=continuous-" in line
    assert "pg_dump exited" in line and "nothing deleted" in line
    assert "wrong-password" not in result.stdout + result.stderr
    assert not list(daemon.backups.parent.glob("postgres-backup.*.err"))


def test_a_dump_cut_short_is_not_kept(daemon: Daemon, tmp_path: Path) -> None:
    """A pg_dump that exits 0 without its end marker (fake: a real one cannot be made to)."""
    fake_bin = tmp_path / "fake-bin"
    fake_bin.mkdir()
    fake_pg_dump = fake_bin / "pg_dump"
    fake_pg_dump.write_text(
        "#!/bin/sh\n"
        'for a in "$@"; do case $a in --file=*) out=${a#--file=} ;; esac; done\n'
        'printf -- "-- PostgreSQL database dump\\nCREATE TABLE half (\\n" > "$out"\n'
    )
    fake_pg_dump.chmod(0o755)
    make_old_backups(daemon.backups, 10)
    before = backup_files(daemon.backups)

    result = daemon.run("once", PATH=f"{fake_bin}:{os.environ['PATH']}")

    assert result.returncode == 1
    assert "the dump has no end marker" in result.stdout
    assert backup_files(daemon.backups) == before


@pytest.mark.parametrize(
    "setting",
    [
        pytest.param({"KEEP": "0"}, id="keep-zero"),
        pytest.param({"KEEP": "ten"}, id="keep-not-a-number"),
        pytest.param({"BACKUP_INTERVAL_SECONDS": "30m"}, id="interval-not-a-number"),
    ],
)
def test_a_bad_setting_stops_before_touching_anything(
    daemon: Daemon, setting: dict[str, str]
) -> None:
    make_old_backups(daemon.backups, 12)
    before = backup_files(daemon.backups)

    result = daemon.run("prune", **setting)

    assert result.returncode == 2
    assert " backup error " in result.stdout
    assert backup_files(daemon.backups) == before


def test_loop_backs_up_every_interval_reports_health_and_stops_cleanly_on_term(
    daemon: Daemon,
) -> None:
    (daemon.backups / "continuous-20240101-000000.sql.part").write_text(
        "left by a killed container"
    )
    heartbeat = daemon.backups.parent / "heartbeat"
    env = daemon.env(BACKUP_INTERVAL_SECONDS="1", HEARTBEAT_FILE=str(heartbeat))
    loop = subprocess.Popen(
        [*daemon.shell, str(SCRIPT), "loop"], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 20
        while len(list(daemon.backups.glob("*.sql"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(list(daemon.backups.glob("*.sql"))) >= 2
        health = subprocess.run(
            [*daemon.shell, str(SCRIPT), "health"], env=env, capture_output=True
        )
        assert health.returncode == 0, health.stdout
        loop.send_signal(signal.SIGTERM)
        status = loop.wait(timeout=5)
    finally:
        if loop.poll() is None:
            loop.kill()
            loop.wait()
    assert status == 143
    assert loop.stdout is not None
    lines = loop.stdout.read().splitlines()
    assert " backup started interval=1s keep=10 " in lines[0]
    assert all(" backup ok file=" in line for line in lines[1:])
    assert list(daemon.backups.glob("*.part")) == [], "the stale .part of this daemon is gone"
    for dump in daemon.backups.glob("*.sql"):
        assert (daemon.backups / f"{dump.name}.sha256").is_file()

    stale = {**env, "HEALTH_MAX_AGE_SECONDS": "0"}
    os.utime(heartbeat, (time.time() - 5, time.time() - 5))
    health = subprocess.run(
        [*daemon.shell, str(SCRIPT), "health"], env=stale, capture_output=True, text=True
    )
    assert health.returncode == 1
    assert "heartbeat is" in health.stdout


# --- encrypted dumps: age from Debian's package, recipients from the ConfigMap ---------


AGE_NAME = re.compile(r"continuous-\d{8}-\d{6}\.sql\.age")


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


def test_once_encrypts_and_the_age_cli_opens_it(daemon: Daemon, keys, tmp_path) -> None:
    recipients, identity = keys
    result = daemon.run("once", BACKUP_RECIPIENTS_FILE=str(recipients))

    assert result.returncode == 0, result.stdout + result.stderr
    (dump,) = [n for n in backup_files(daemon.backups) if n.endswith(".age")]
    assert AGE_NAME.fullmatch(dump)
    assert backup_files(daemon.backups) == [dump, f"{dump}.sha256"]
    data = (daemon.backups / dump).read_bytes()
    assert agecrypt.is_encrypted(data)
    # Nothing readable on the volume: no row, no SQL.
    for plain in (b"Erika", b"Max\t25", b"CREATE TABLE", b"PostgreSQL database dump"):
        assert plain not in data
    sidecar = (daemon.backups / f"{dump}.sha256").read_text()
    assert sidecar == f"{hashlib.sha256(data).hexdigest()}  {dump}\n"
    assert f" backup ok file={dump} " in result.stdout

    opened = subprocess.run(
        ["age", "-d", "-i", str(identity), str(daemon.backups / dump)],
        capture_output=True,
        check=True,
    ).stdout.decode()
    assert "Max\t25" in opened and "Erika\t31" in opened
    assert "-- PostgreSQL database dump complete" in opened.splitlines()[-5:]

    # ... and it restores over the live database, as --from-daemon does after decrypting.
    plain = tmp_path / "decrypted.sql"
    plain.write_text(opened)
    daemon.server.psql("UPDATE student SET age = 99", daemon.database)
    restore_with_psql(daemon.server, plain, daemon.database)
    rows = daemon.server.psql("SELECT name, age FROM student ORDER BY id", daemon.database)
    assert "Max|25" in rows and "Erika|31" in rows and "99" not in rows


def test_retention_counts_encrypted_backups(daemon: Daemon, keys) -> None:
    recipients, _ = keys
    old = make_old_backups(daemon.backups, 10)
    result = daemon.run("once", BACKUP_RECIPIENTS_FILE=str(recipients))
    assert result.returncode == 0, result.stdout
    assert "kept=10 deleted=1" in result.stdout
    names = backup_files(daemon.backups)
    assert old[0] not in names and sum(n.endswith(".age") for n in names) == 1


def test_a_comment_only_recipients_file_means_plain_dumps(daemon: Daemon, tmp_path) -> None:
    recipients = tmp_path / "recipients.txt"
    recipients.write_text("# no keys yet\n\n")
    result = daemon.run("once", BACKUP_RECIPIENTS_FILE=str(recipients))
    assert result.returncode == 0, result.stdout + result.stderr
    (dump,) = [n for n in backup_files(daemon.backups) if not n.endswith(".sha256")]
    assert dump.endswith(".sql")


def test_a_failing_pg_dump_keeps_no_ciphertext(daemon: Daemon, keys) -> None:
    recipients, _ = keys
    make_old_backups(daemon.backups, 3)
    before = backup_files(daemon.backups)
    result = daemon.run(
        "once",
        BACKUP_RECIPIENTS_FILE=str(recipients),
        PGDATABASE="no_such_database",
    )
    assert result.returncode == 1
    assert "pg_dump exited" in result.stdout and "nothing deleted" in result.stdout
    assert backup_files(daemon.backups) == before


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
    daemon: Daemon, keys, tmp_path, problem
) -> None:
    recipients, _ = keys
    extra = {"BACKUP_RECIPIENTS_FILE": str(recipients)}
    if problem == "bad-key":
        recipients.write_text("age1thisisnotakey\n")
    else:
        extra["PATH"] = f"{daemon.server.client_bindir}:{without_age(tmp_path)}"
    make_old_backups(daemon.backups, 2)
    before = backup_files(daemon.backups)

    result = daemon.run("once", **extra)

    assert result.returncode == 2, result.stdout + result.stderr
    assert " backup error " in result.stdout
    assert ("no age" if problem == "no-age" else "age refuses") in result.stdout
    assert backup_files(daemon.backups) == before
