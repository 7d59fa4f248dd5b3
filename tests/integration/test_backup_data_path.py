"""The backup data path against a real PostgreSQL 15 with the real pg_dump/pg_restore/psql.

The same commands that run in the postgres pod run here, through ``LocalRunner`` (a local
subprocess) or through ``PodExec`` talking to FakeExecServer (the exec wire protocol,
served locally, running the same real tools) for the faults only a stream can have.
"""

from __future__ import annotations

import io
import random
import re
import shutil
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ops.backups.commands import GATE_FILLER, Gate, pg_command, restore_command
from ops.backups.daemon import _RECEIVE, fetch_from_daemon, list_daemon, send_to_daemon
from ops.backups.dump import Source, take_backup
from ops.backups.files import BackupInfo, sidecar_of, verify_backup
from ops.backups.restore import drill, restore_backup, row_counts
from ops.errors import (
    BackupError,
    CorruptBackup,
    DumpFailed,
    ExecFailed,
    RestoreFailed,
    ServerKilled,
)
from ops.execstream import LocalRunner, PodExec
from ops.kube import KubeTarget
from tests.fakes.exec_server import V4, V5, fake_exec_server
from tests.support.services import require

pytestmark = pytest.mark.integration

FORMATS = [pytest.param("custom", id="custom"), pytest.param("plain", id="plain")]


@pytest.fixture(scope="module")
def tools():
    for tool in ("pg_dump", "pg_restore", "psql", "sh", "head", "sha256sum"):
        require(shutil.which(tool) is not None, f"{tool} not installed (postgresql-client-15)")


@pytest.fixture
def env(postgres_server, tools):
    """What the postgres pod's shell has: POSTGRES_USER/PASSWORD (+ where the server is)."""
    return {
        **postgres_server.env(),
        "POSTGRES_USER": postgres_server.superuser,
        "POSTGRES_PASSWORD": postgres_server.password,
    }


@pytest.fixture
def db(postgres_server, fresh_database):
    postgres_server.psql(
        "CREATE TABLE student (id int PRIMARY KEY, name text NOT NULL, age int);"
        "INSERT INTO student SELECT g, 'name ' || g || E' \\u00e4\\u00df\\t\\n', g % 90 "
        "FROM generate_series(1, 20000) g;"
        "CREATE TABLE blobs (id int PRIMARY KEY, data bytea);"
        "INSERT INTO blobs SELECT g, decode(md5(g::text) || md5((g * 7)::text), 'hex') "
        "FROM generate_series(1, 2000) g;"
        "CREATE VIEW adults AS SELECT * FROM student WHERE age >= 18;",
        fresh_database,
    )
    return fresh_database


@pytest.fixture
def source(env, db):
    return Source(runner=LocalRunner(env=env), database=db, context="local", namespace="-", pod="-")


def plain_sql(postgres_server, database: str) -> str:
    """The database as plain SQL, without the per-run \\restrict key."""
    import subprocess

    out = subprocess.run(
        ["pg_dump", "--format=plain", "--no-owner", "-d", database],
        env=postgres_server.env(database),
        capture_output=True,
        check=True,
    ).stdout.decode()
    return re.sub(r"^\\(un)?restrict \S+$", "", out, flags=re.M)


def counts(postgres_server, database: str) -> str:
    return postgres_server.psql(
        "SELECT (SELECT count(*) FROM student), (SELECT sum(age) FROM student), "
        "(SELECT md5(string_agg(name, ',' ORDER BY id)) FROM student)",
        database,
    )


# --- round trips --------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_restores_an_identical_database(tmp_path, postgres_server, source, env, fmt):
    path, info = take_backup(source, backups_dir=tmp_path, fmt=fmt)
    assert path.name.startswith(f"{source.database}-local-") and not list(tmp_path.glob("*.part"))
    assert info.size == path.stat().st_size and info.format == fmt
    assert info.server_version.startswith("15")

    fresh = postgres_server.create_database(f"{source.database}_copy")
    try:
        target = Source(
            runner=LocalRunner(env=env), database=fresh, context="local", namespace="-", pod="-"
        )
        report = restore_backup(
            path,
            target,
            full_reader=LocalRunner(env=env),
            backups_dir=tmp_path,
            safety_backup=False,
        )
        assert report.tables == {"public.blobs": 2000, "public.student": 20000}
        assert plain_sql(postgres_server, fresh) == plain_sql(postgres_server, source.database)
    finally:
        postgres_server.drop_database(fresh)


class _Recording(LocalRunner):
    """The local runner, remembering every command it ran."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.commands: list[list[str]] = []

    def run(self, argv, **kw):
        self.commands.append(list(argv))
        return super().run(argv, **kw)


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_restore_reports_each_tables_rows_without_counting_them_again(
    tmp_path, postgres_server, env, db, fmt
):
    """Seen: after the restore, a count(*) of every table read the whole database again
    (seconds for 1 GB; restore 0.85x kubectl's pg_restore). The transaction now reports
    the rows each table received, before its COMMIT: the same figures, no second pass."""
    postgres_server.psql(
        'CREATE TABLE "empty one" (id int);'
        'CREATE TABLE "Größe $x" (id int); INSERT INTO "Größe $x" SELECT generate_series(1, 7);'
        "CREATE TABLE measured (day int, v int) PARTITION BY RANGE (day);"
        "CREATE TABLE measured_a PARTITION OF measured FOR VALUES FROM (0) TO (10);"
        "CREATE TABLE measured_b PARTITION OF measured FOR VALUES FROM (10) TO (20);"
        "INSERT INTO measured SELECT g % 20, g FROM generate_series(1, 333) g;"
        "CREATE SCHEMA other; CREATE TABLE other.student (id int);"
        "INSERT INTO other.student SELECT generate_series(1, 5);",
        db,
    )
    source = Source(
        runner=LocalRunner(env=env), database=db, context="local", namespace="-", pod="-"
    )
    path, _ = take_backup(source, backups_dir=tmp_path, fmt=fmt)
    postgres_server.psql("DELETE FROM student WHERE id > 10; INSERT INTO blobs VALUES (0, '')", db)
    runner = _Recording(env=env)
    report = restore_backup(
        path,
        Source(runner=runner, database=db, context="local", namespace="-", pod="-"),
        full_reader=None,
        backups_dir=tmp_path,
        safety_backup=False,
    )
    assert [c for c in runner.commands if "count(*)" in " ".join(c)] == []
    assert report.tables == row_counts(LocalRunner(env=env), db)
    assert report.tables == {
        'public."Größe $x"': 7,
        'public."empty one"': 0,
        "public.blobs": 2000,
        "public.measured": 333,
        "public.measured_a": 169,
        "public.measured_b": 164,
        "public.student": 20000,
        "other.student": 5,
    }


@pytest.mark.parametrize("fmt", FORMATS)
def test_restore_brings_changed_rows_back_and_keeps_a_safety_backup(
    tmp_path, postgres_server, source, db, fmt
):
    before = counts(postgres_server, db)
    path, _ = take_backup(source, backups_dir=tmp_path, fmt=fmt)
    postgres_server.psql("DELETE FROM student WHERE id % 3 = 0; UPDATE student SET age = 1", db)
    changed = counts(postgres_server, db)

    report = restore_backup(path, source, full_reader=source.runner, backups_dir=tmp_path)

    assert counts(postgres_server, db) == before
    assert report.safety_backup is not None and report.safety_backup != path
    verify_backup(report.safety_backup, full_reader=source.runner)
    # the safety backup holds the state before the restore
    restore_backup(
        report.safety_backup, source, full_reader=None, backups_dir=tmp_path, safety_backup=False
    )
    assert counts(postgres_server, db) == changed


def test_drill_restores_into_a_scratch_database_and_drops_it(postgres_server, source, tmp_path):
    path, _ = take_backup(source, backups_dir=tmp_path)
    drilled = drill(path, source)
    restored, live = drilled.restored, drilled.live
    assert restored == live == {"public.blobs": 2000, "public.student": 20000}
    assert "_drill_" not in postgres_server.psql("SELECT string_agg(datname, ',') FROM pg_database")


def _mean_write(argv: list[str], env: dict[str, str]) -> float:
    """The mean size of the command's write() calls (its /proc/PID/io once it has exited and
    before it is reaped: `sh -c` execs pg_dump, so that is pg_dump's own count)."""
    import os
    import subprocess

    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, env={**os.environ, **env})
    assert proc.stdout is not None
    while proc.stdout.read(1 << 20):
        pass
    deadline = time.monotonic() + 30
    while Path(f"/proc/{proc.pid}/stat").read_text().split(") ")[1][0] != "Z":
        assert time.monotonic() < deadline, "pg_dump did not exit"
        time.sleep(0.01)
    io = dict(line.split(": ") for line in Path(f"/proc/{proc.pid}/io").read_text().splitlines())
    assert proc.wait() == 0
    return int(io["wchar"]) / int(io["syscw"])


def test_pg_dump_writes_its_stream_in_large_pieces(postgres_server, env, db):
    """Every write into the pipe is a frame through the runtime, the kubelet and the API
    server: pg_dump's stdio flushed 4 KiB at a time, which halved the backup's speed."""
    from ops.backups.commands import dump_command

    postgres_server.psql(
        "INSERT INTO student SELECT g, repeat('x', 200), 20 FROM generate_series(20001, 120000) g",
        db,
    )
    for fmt in ("custom", "plain"):
        mean = _mean_write(dump_command(db, fmt, 0), env)
        assert mean > 64 * 1024, f"{fmt}: pg_dump's writes were {mean:.0f} bytes on average"


def _output(argv: list[str], env: dict[str, str]) -> bytes:
    import os
    import subprocess

    return subprocess.run(argv, env={**os.environ, **env}, capture_output=True, check=True).stdout


def test_without_stdbuf_in_the_image_the_dump_is_the_same(tmp_path, postgres_server, env, db):
    """An image without stdbuf (busybox, distroless) gets plain pg_dump: same bytes."""
    from ops.backups.commands import dump_command

    bare = tmp_path / "bin"
    bare.mkdir()
    for tool in ("sh", "pg_dump"):
        (bare / tool).symlink_to(Path(shutil.which(tool) or tool).resolve())
    argv = dump_command(db, "plain", 0)
    with_stdbuf = _output(argv, env)
    without = _output(argv, {**env, "PATH": str(bare)})
    strip = re.compile(rb"^\\(un)?restrict \S+$", re.M)
    assert strip.sub(b"", with_stdbuf) == strip.sub(b"", without)
    assert b"COPY public.student" in without


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_restores_index_builds_sort_in_256_mb(tmp_path, postgres_server, source, db, fmt):
    """The indexes rebuilt at the end of a restore get maintenance_work_mem 256 MB in its
    transaction (the server's 64 MB default sorted a large table on disk), and only there.
    An index over a function that fails under less proves what its build saw."""
    postgres_server.psql(
        "SET maintenance_work_mem = '256MB';"
        "CREATE FUNCTION public.needs_256mb(v int) RETURNS int IMMUTABLE LANGUAGE plpgsql AS "
        "$$BEGIN IF pg_catalog.pg_size_bytes(pg_catalog.current_setting('maintenance_work_mem'))"
        " < 256 * 1024 * 1024 THEN RAISE EXCEPTION 'index built with %',"
        " pg_catalog.current_setting('maintenance_work_mem'); END IF; RETURN v; END$$;"
        "CREATE INDEX student_256mb ON student (public.needs_256mb(id));",
        db,
    )
    path, _ = take_backup(source, backups_dir=tmp_path, fmt=fmt)
    report = restore_backup(
        path, source, full_reader=None, backups_dir=tmp_path, safety_backup=False
    )
    assert report.tables == {"public.blobs": 2000, "public.student": 20000}
    assert "student_256mb" in plain_sql(postgres_server, db)
    assert postgres_server.psql("SHOW maintenance_work_mem", db).strip() == "64MB"


# --- verify catches what is wrong -----------------------------------------------------------


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("where", [0.1, 0.5, 0.99], ids=["early", "middle", "late"])
def test_verify_catches_a_flipped_byte(tmp_path, source, fmt, where):
    path, info = take_backup(source, backups_dir=tmp_path, fmt=fmt)
    verify_backup(path, full_reader=source.runner)
    flip_byte(path, int(info.size * where))
    with pytest.raises(CorruptBackup, match="sha256 differs"):
        verify_backup(path, full_reader=source.runner)


@pytest.mark.parametrize("fmt", FORMATS)
def test_without_a_sidecar_verify_says_what_it_cannot_know(
    tmp_path, postgres_server, source, db, fmt
):
    """Seen: --no-sidecar called a dump with one digit changed "complete, unaltered"."""
    postgres_server.psql("UPDATE student SET age = 41 WHERE id = 7", db)
    path, _ = take_backup(source, backups_dir=tmp_path, fmt=fmt)
    data = path.read_bytes()
    marker = b"name 7 "
    row = data.index(marker)
    age = data.index(b"41", row)  # the row's age, in the COPY data
    path.write_bytes(data[:age] + b"42" + data[age + 2 :])
    with pytest.raises(CorruptBackup, match="sha256 differs"):
        verify_backup(path, full_reader=source.runner)

    sidecar_of(path).unlink()
    checked = verify_backup(path, full_reader=source.runner, require_sidecar=False)
    assert checked.info is None
    assert checked.summary == (
        f"complete and readable as a {fmt} dump; whether it was altered cannot be known "
        "without its sidecar"
    )
    assert "unaltered" not in checked.summary and "sha256" not in " ".join(checked.checks)
    # What is restored is what the file says, altered or not: only a sidecar could tell.
    restore_backup(path, source, full_reader=None, backups_dir=tmp_path, require_sidecar=False)
    assert postgres_server.psql("SELECT age FROM student WHERE id = 7", db) == "42"


@pytest.mark.parametrize("fmt", FORMATS)
def test_verify_catches_truncation_with_and_without_a_sidecar(tmp_path, source, fmt):
    path, info = take_backup(source, backups_dir=tmp_path, fmt=fmt, compression=6)
    rng = random.Random(6)
    whole = path.read_bytes()
    for cut in sorted(rng.sample(range(1, info.size), 20)):
        path.write_bytes(whole[:cut])
        with pytest.raises(CorruptBackup, match="bytes, its sidecar says"):
            verify_backup(path, full_reader=source.runner)
        # without the sidecar, the format itself must still give the truncation away
        with pytest.raises(CorruptBackup):
            verify_backup(path, full_reader=source.runner, require_sidecar=False)
    path.write_bytes(whole)
    verify_backup(path, full_reader=source.runner, require_sidecar=False)


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"\x1f\x8b\x08\x00" + bytes(100), id="gzip"),
        pytest.param(b"SELECT 1;\n", id="sql-not-from-pg_dump"),
        pytest.param(bytes(range(256)) * 10, id="binary-noise"),
    ],
)
def test_verify_rejects_a_file_of_another_format(tmp_path, source, content):
    path = tmp_path / "other.dump"
    path.write_bytes(content)
    with pytest.raises(CorruptBackup):
        verify_backup(path, full_reader=source.runner, require_sidecar=False)


def test_verify_rejects_a_tar_archive_from_pg_dump(tmp_path, postgres_server, db):
    import subprocess

    path = tmp_path / "x.dump"
    subprocess.run(
        ["pg_dump", "-Ft", "-f", str(path), "-d", db], env=postgres_server.env(db), check=True
    )
    with pytest.raises(CorruptBackup, match="tar archive"):
        verify_backup(path, full_reader=None, require_sidecar=False)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("where", [0.1, 0.5, 0.99], ids=["early", "middle", "late"])
def test_a_corrupt_file_of_the_right_length_never_changes_the_database(
    tmp_path, postgres_server, source, db, fmt, where
):
    """The restore reads the file once: its sha256 is computed as it streams, and the
    transaction commits only if it is the sidecar's. A file altered after its backup (same
    length, other bytes) is refused at the end of the stream, the database unchanged."""
    path, info = take_backup(source, backups_dir=tmp_path, fmt=fmt)
    flip_byte(path, int(info.size * where))
    assert path.stat().st_size == info.size
    postgres_server.psql("UPDATE student SET age = 99 WHERE id = 1", db)
    before, schema = counts(postgres_server, db), plain_sql(postgres_server, db)
    with pytest.raises(CorruptBackup, match="sha256 differs from its sidecar") as caught:
        restore_backup(path, source, full_reader=None, backups_dir=tmp_path / "safety")
    assert "nothing was changed" in caught.value.message
    assert "safety backup" in caught.value.message  # taken before the stream, and named
    assert counts(postgres_server, db) == before
    assert plain_sql(postgres_server, db) == schema


# --- faults ------------------------------------------------------------------------------------


def pod_source(server, db) -> Source:
    target = KubeTarget(kubeconfig=None, context="fake", namespace="ns")
    runner = PodExec(target, "postgres-0", client_factory=server.client_factory)
    return Source(runner=runner, database=db, context="fake", namespace="ns", pod="postgres-0")


def test_a_connection_dropped_at_random_points_never_leaves_a_file(tmp_path, env, db):
    with fake_exec_server(env=env) as server:
        complete, info = take_backup(pod_source(server, db), backups_dir=tmp_path / "ok")
        verify_backup(complete, full_reader=LocalRunner(env=env))
        rng = random.Random(20)
        cuts = [0, 1, 5, info.size - 1, *rng.sample(range(6, info.size - 1), 20)]
        for cut in cuts:
            server.behaviour.drop_after_stdout_bytes = cut
            out = tmp_path / f"cut-{cut}"
            with pytest.raises(DumpFailed, match="without an exit status"):
                take_backup(pod_source(server, db), backups_dir=out)
            assert list(out.iterdir()) == [], f"cut at {cut} left {list(out.iterdir())}"


def test_any_truncated_stream_fails_verify(tmp_path, env, source):
    """What a cut connection would leave, if it were kept, never passes verify."""
    path, info = take_backup(source, backups_dir=tmp_path, compression=1)
    whole = path.read_bytes()
    sidecar_of(path).unlink()
    rng = random.Random(21)
    for cut in [0, 1, 5, 100, info.size - 1, *rng.sample(range(101, info.size - 1), 20)]:
        path.write_bytes(whole[:cut])
        with pytest.raises(CorruptBackup):
            verify_backup(path, full_reader=LocalRunner(env=env), require_sidecar=False)


def test_pg_dump_failing_shows_its_stderr_and_keeps_nothing(tmp_path, env):
    source = Source(
        runner=LocalRunner(env=env), database="no_such_db", context="c", namespace="n", pod="p"
    )
    with pytest.raises(DumpFailed, match='database "no_such_db" does not exist'):
        take_backup(source, backups_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_pg_dump_failing_in_the_pod_shows_its_stderr(tmp_path, env):
    with (
        fake_exec_server(env=env) as server,
        pytest.raises(DumpFailed, match='database "nope" does not exist'),
    ):
        take_backup(pod_source(server, "nope"), backups_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


class DiskFull(io.RawIOBase):
    """A file that fails like a full disk after ``room`` bytes (ENOSPC)."""

    def __init__(self, path: Path, room: int) -> None:
        self.f = path.open("xb")
        self.room = room

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(28, "No space left on device")
        self.room -= len(data)
        return self.f.write(data)

    def fileno(self) -> int:
        return self.f.fileno()

    def close(self) -> None:
        self.f.close()
        super().close()


@pytest.mark.parametrize("via", ["local", "exec"])
def test_a_full_disk_is_one_clear_error_and_leaves_nothing(tmp_path, env, db, via):
    out = tmp_path / "backups"
    with fake_exec_server(env=env) as server:
        source = (
            pod_source(server, db)
            if via == "exec"
            else Source(
                runner=LocalRunner(env=env), database=db, context="c", namespace="n", pod="p"
            )
        )
        with pytest.raises(BackupError, match="No space left on device"):
            take_backup(
                source,
                backups_dir=out,
                opener=lambda p: DiskFull(p, 300_000),  # type: ignore[arg-type, return-value]
            )
    assert list(out.iterdir()) == []


def test_two_backups_at_once_do_not_clobber_each_other(tmp_path, source, env):
    when = datetime(2026, 11, 26, 7, 0, 0, tzinfo=UTC)
    results: list[Path] = []
    errors: list[BaseException] = []

    def one() -> None:
        try:
            results.append(take_backup(source, backups_dir=tmp_path, now=when)[0])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len({p.name for p in results}) == 3
    for path in results:
        verify_backup(path, full_reader=LocalRunner(env=env))
        assert BackupInfo.read(sidecar_of(path)).file == path.name


def test_ctrl_c_mid_stream_removes_the_part_and_ends_pg_dump(tmp_path, env, db, postgres_server):
    import contextlib
    import time

    @contextlib.contextmanager
    def interrupt_after(_description, _total):
        seen = 0

        def advance(n):
            nonlocal seen
            seen += n
            if seen > 100_000:
                raise KeyboardInterrupt

        yield advance

    postgres_server.psql(
        "INSERT INTO blobs SELECT g, decode(repeat(md5(g::text), 2000), 'hex') "
        "FROM generate_series(3000, 4000) g",
        db,
    )
    with fake_exec_server(env=env) as server, pytest.raises(KeyboardInterrupt):
        take_backup(pod_source(server, db), backups_dir=tmp_path, progress=interrupt_after)
    assert list(tmp_path.iterdir()) == []
    for _ in range(50):
        active = postgres_server.psql(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg_dump'"
        )
        if active == "0":
            break
        time.sleep(0.1)
    assert active == "0", "pg_dump is still running after the interrupt"


# --- restores that fail leave the database as it was -----------------------------------------


def write_with_sidecar(path: Path, content: bytes, fmt) -> None:
    import hashlib

    path.write_bytes(content)
    BackupInfo(
        file=path.name,
        sha256=hashlib.sha256(content).hexdigest(),
        size=len(content),
        database="x",
        format=fmt,
        compression="none",
        server_version="15",
        source_context="c",
        source_namespace="n",
        source_pod="p",
        created="2026-11-26T07:00:00+00:00",
    ).write(sidecar_of(path))


def test_plain_restore_failing_midway_changes_nothing(tmp_path, postgres_server, source, db):
    path, _ = take_backup(source, backups_dir=tmp_path, fmt="plain")
    text = path.read_bytes()
    # a statement that fails after the tables were dropped and half the data is back
    broken = text.replace(b"\nCOPY public.student", b"\nSELECT 1/0;\nCOPY public.student", 1)
    assert broken != text
    bad = tmp_path / "broken.sql"
    write_with_sidecar(bad, broken, "plain")
    postgres_server.psql("UPDATE student SET age = 7 WHERE id < 100", db)
    before = counts(postgres_server, db)
    with pytest.raises(RestoreFailed, match="division by zero"):
        restore_backup(bad, source, full_reader=None, backups_dir=tmp_path)
    assert counts(postgres_server, db) == before


def test_custom_restore_failing_midway_changes_nothing(tmp_path, postgres_server, source, db):
    role = f"reader_{db}"
    postgres_server.psql(f"CREATE ROLE {role}; GRANT SELECT ON student TO {role}", db)
    path, _ = take_backup(source, backups_dir=tmp_path)
    # The dump's last step, GRANT ... TO the role, fails: data and objects are back by then.
    postgres_server.psql(f"REVOKE ALL ON student FROM {role}; DROP ROLE {role}", db)
    postgres_server.psql(
        "UPDATE student SET age = 7 WHERE id < 100;"
        "CREATE VIEW local_report AS SELECT count(*) FROM student",
        db,
    )
    before = plain_sql(postgres_server, db)
    with pytest.raises(RestoreFailed, match=f'role "{role}" does not exist') as caught:
        restore_backup(path, source, full_reader=None, backups_dir=tmp_path)
    assert plain_sql(postgres_server, db) == before
    safety = caught.value.context["safety_backup"]
    assert f"the safety backup taken before is {safety}" in caught.value.message
    assert Path(str(safety)).is_file()
    assert "fix the dump" not in caught.value.hint


CHANGES_AFTER_THE_DUMP = (
    "CREATE TABLE made_later (id int PRIMARY KEY, note text);"
    "INSERT INTO made_later VALUES (1, 'should vanish');"
    "CREATE SCHEMA reporting; CREATE TABLE reporting.totals AS SELECT count(*) AS n FROM student;"
    "CREATE FUNCTION later() RETURNS int LANGUAGE sql AS 'SELECT 1';"
    "CREATE SEQUENCE later_seq;"
    "ALTER TABLE student ADD COLUMN email text DEFAULT 'x@example.invalid';"
    "DROP VIEW adults;"
    "DELETE FROM student WHERE id % 5 = 0; UPDATE student SET age = age + 1 WHERE id < 500;"
    "INSERT INTO blobs VALUES (99999, '\\xdeadbeef');"
    "SELECT lo_from_bytea(0, 'a large object made later');"
)


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_restore_leaves_exactly_what_the_backup_holds(tmp_path, postgres_server, source, db, fmt):
    """Seen: a table created after the dump was still there after the restore (a merge)."""
    original = plain_sql(postgres_server, db)
    path, _ = take_backup(source, backups_dir=tmp_path, fmt=fmt)
    postgres_server.psql(CHANGES_AFTER_THE_DUMP, db)
    changed = plain_sql(postgres_server, db)
    assert changed != original and "made_later" in changed

    report = restore_backup(path, source, full_reader=source.runner, backups_dir=tmp_path)

    assert plain_sql(postgres_server, db) == original  # schema and data, nothing more
    assert set(report.tables) == {"public.blobs", "public.student"}
    assert postgres_server.psql("SELECT count(*) FROM pg_largeobject_metadata", db) == "0"
    # What was dropped is in the safety backup.
    assert report.safety_backup is not None
    restore_backup(
        report.safety_backup, source, full_reader=None, backups_dir=tmp_path, safety_backup=False
    )
    assert plain_sql(postgres_server, db) == changed


def test_a_custom_dump_cut_short_through_the_restore_pipe_never_commits(
    tmp_path, postgres_server, source, db
):
    """pg_restore stops at the cut; the wipe before it must roll back with it."""
    path, _ = take_backup(source, backups_dir=tmp_path)
    postgres_server.psql(CHANGES_AFTER_THE_DUMP, db)
    before = plain_sql(postgres_server, db)
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 3):
        with pytest.raises(ExecFailed, match=r"could not read the dump to its end|pg_restore"):
            source.runner.run(
                restore_command(db, "custom"), stdin=io.BytesIO(data[:cut]), stdin_size=cut
            )
        assert plain_sql(postgres_server, db) == before


def test_a_gated_restore_commits_only_if_stdin_ends_with_its_own_seal(
    tmp_path, postgres_server, source, db
):
    """pg_restore reads the dump straight off stdin (no `head -c` cutting it out); what
    follows it decides: only this restore's nonce and the sidecar's sha256, as the client's
    last bytes, commit. The sidecar's sha256 alone (what a file, or a stream cut short after
    one, could end with), another digest, a seal cut short or nothing after the dump roll
    back: the wipe before the dump with them."""
    path, info = take_backup(source, backups_dir=tmp_path)
    dumped = plain_sql(postgres_server, db)
    postgres_server.psql(CHANGES_AFTER_THE_DUMP, db)
    before = plain_sql(postgres_server, db)
    data = path.read_bytes()
    gate = Gate(info.sha256)
    refused = {
        "the sidecar's sha256 without the nonce": data + b"\n" * GATE_FILLER + info.sha256.encode(),
        "another digest": data + gate.trailer("0" * 64),
        "the seal cut short": data + gate.trailer(info.sha256)[:-1],
        "nothing after the dump": data,
    }
    for name, stdin in refused.items():
        with pytest.raises(ExecFailed, match="sha256 differs from its sidecar"):
            source.runner.run(
                restore_command(db, "custom", gate=gate),
                stdin=io.BytesIO(stdin),
                stdin_size=len(stdin),
            )
        assert plain_sql(postgres_server, db) == before, name
    sealed = data + gate.trailer(info.sha256)
    source.runner.run(
        restore_command(db, "custom", gate=gate), stdin=io.BytesIO(sealed), stdin_size=len(sealed)
    )
    assert plain_sql(postgres_server, db) == dumped


@pytest.mark.parametrize("protocols", ["v5", "v4"])
def test_a_gated_restore_through_the_exec_api_under_either_protocol(
    tmp_path, postgres_server, env, source, db, protocols
):
    """Through the exec wire protocol: under v5 pg_restore reads the exec's stdin itself and
    the seal is what comes before the close signal; under v4 `head -c` ends stdin. Either
    way a good file commits and an altered one of the same length does not."""
    path, _ = take_backup(source, backups_dir=tmp_path)
    dumped = plain_sql(postgres_server, db)
    postgres_server.psql(CHANGES_AFTER_THE_DUMP, db)
    chosen = (V5, V4) if protocols == "v5" else (V4,)
    with fake_exec_server(env=env, protocols=chosen) as server:
        restore_backup(path, pod_source(server, db), full_reader=None, backups_dir=tmp_path / "s")
        assert plain_sql(postgres_server, db) == dumped
        postgres_server.psql(CHANGES_AFTER_THE_DUMP, db)
        changed = plain_sql(postgres_server, db)
        flip_byte(path, path.stat().st_size // 2)
        with pytest.raises(CorruptBackup, match="sha256 differs from its sidecar"):
            restore_backup(
                path, pod_source(server, db), full_reader=None, backups_dir=tmp_path / "s"
            )
    assert plain_sql(postgres_server, db) == changed


def test_a_server_process_killed_mid_restore_is_named_as_such(
    tmp_path, postgres_server, source, db
):
    """Seen: the backend was OOM-killed and the message said "fix the dump"."""
    import os
    import signal
    import time

    postgres_server.psql(
        "CREATE TABLE big (id int, data bytea);"
        "INSERT INTO big SELECT g, convert_to(repeat(md5(g::text), 2000), 'UTF8') "
        "FROM generate_series(1, 3000) g;",
        db,
    )
    path, _ = take_backup(source, backups_dir=tmp_path, fmt="plain")
    postgres_server.psql("UPDATE student SET age = 3", db)
    before = counts(postgres_server, db)
    killed: list[int] = []

    def kill_the_restoring_backend() -> None:
        query = (
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND query ILIKE 'COPY public.big % FROM stdin%'"
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not killed:
            pids = postgres_server.psql(query, db).split()
            if pids:
                os.kill(int(pids[0]), signal.SIGKILL)  # what the kernel's OOM killer sends
                killed.append(int(pids[0]))
            time.sleep(0.02)

    killer = threading.Thread(target=kill_the_restoring_backend)
    killer.start()
    try:
        with pytest.raises(ServerKilled) as caught:
            restore_backup(path, source, full_reader=None, backups_dir=tmp_path)
    finally:
        killer.join()
    assert killed
    message = caught.value.message
    assert "killed" in message and "out of memory" in message and "fix the dump" not in message
    assert "memory" in caught.value.hint and "postgres-statefulset.yaml" in caught.value.hint
    assert "the safety backup taken before is" in message
    for _ in range(100):  # crash recovery
        try:
            if counts(postgres_server, db) == before:
                break
        except Exception:
            pass
        time.sleep(0.2)
    assert counts(postgres_server, db) == before


def test_a_plain_restore_stream_cut_short_never_commits(tmp_path, postgres_server, env, db):
    """psql --single-transaction would COMMIT whatever arrived before EOF; ours cannot."""
    source = Source(runner=LocalRunner(env=env), database=db, context="c", namespace="n", pod="p")
    path, _ = take_backup(source, backups_dir=tmp_path, fmt="plain")
    postgres_server.psql("UPDATE student SET age = 7 WHERE id < 100", db)
    before = counts(postgres_server, db)
    whole = b"BEGIN;\n" + path.read_bytes()
    # Cut after the last COPY block: tables dropped and refilled, constraints not yet made.
    cut = whole[: whole.rindex(b"\n\\.\n") + 4]

    class CutShort(io.RawIOBase):
        def __init__(self):
            self.data = io.BytesIO(cut)

        def readable(self):
            return True

        def read(self, n=-1):
            chunk = self.data.read(n)
            if not chunk:
                raise ConnectionResetError("the network went away")
            return chunk

    with fake_exec_server(env=env) as server:
        runner = pod_source(server, db).runner
        with pytest.raises((ConnectionResetError, ExecFailed)):
            runner.run(restore_command(db, "plain"), stdin=CutShort(), stdin_size=len(whole))
    assert counts(postgres_server, db) == before

    # The control: psql's own --single-transaction commits the same cut stream.
    single = pg_command(
        "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction", "-f", "-", "-d", db
    )
    source.runner.run(single, stdin=io.BytesIO(cut[len(b"BEGIN;\n") :]), check=False)
    assert counts(postgres_server, db) != before


# --- the daemon's volume (the same scripts, in a local folder) --------------------------------


@pytest.mark.parametrize("protocols", ["v5", "v4"])
def test_send_to_daemon_checks_sha256_there_and_never_overwrites(tmp_path, env, source, protocols):

    path, info = take_backup(source, backups_dir=tmp_path / "local")
    volume = tmp_path / "volume"
    volume.mkdir()
    chosen = (V5, V4) if protocols == "v5" else (V4,)
    with fake_exec_server(env=env, protocols=chosen) as server:
        runner = pod_source(server, source.database).runner
        digest = send_to_daemon(path, runner, directory=str(volume))
        assert digest == info.sha256
        import subprocess

        subprocess.run(["sha256sum", "-c", f"{path.name}.sha256"], cwd=volume, check=True)
        original = (volume / path.name).read_bytes()

        other = tmp_path / "other.dump"
        other.write_bytes(b"PGDMP not the same")
        with pytest.raises(BackupError, match="already exists"):
            send_to_daemon(other, runner, name=path.name, directory=str(volume))
        assert (volume / path.name).read_bytes() == original
        assert sorted(p.name for p in volume.iterdir()) == [path.name, f"{path.name}.sha256"]

        listed = list_daemon(runner, check=True, directory=str(volume))
        assert [(b.name, b.size, b.verified) for b in listed] == [
            (path.name, info.size, "sha256 ok")
        ]
        fetched = fetch_from_daemon(
            path.name,
            runner,
            backups_dir=tmp_path / "fetched",
            source=source,
            directory=str(volume),
        )
        assert fetched.read_bytes() == original
        verify_backup(fetched, full_reader=LocalRunner(env=env))


def test_an_upload_keeps_the_dumps_time_and_never_takes_a_daemon_name(tmp_path, env, source):
    """Seen: the daemon's copy was dated by the upload, not by the dump."""
    dumped = datetime(2026, 11, 1, 8, 30, 15, tzinfo=UTC)
    path, info = take_backup(source, backups_dir=tmp_path / "local", now=dumped)
    assert info.created == "2026-11-01T08:30:15+00:00"
    volume = tmp_path / "volume"
    volume.mkdir()
    with fake_exec_server(env=env) as server:
        runner = pod_source(server, source.database).runner
        send_to_daemon(path, runner, created=dumped, directory=str(volume))
        (listed,) = list_daemon(runner, directory=str(volume))
        assert listed.modified == dumped
        fetched = fetch_from_daemon(
            path.name, runner, backups_dir=tmp_path / "back", source=source, directory=str(volume)
        )
        assert BackupInfo.read(sidecar_of(fetched)).created == "2026-11-01T08:30:15+00:00"
        with pytest.raises(BackupError, match="looks like one of the daemon's own dumps"):
            send_to_daemon(
                path, runner, name="continuous-20261101-083015.sql", directory=str(volume)
            )
    assert sorted(p.name for p in volume.iterdir()) == [path.name, f"{path.name}.sha256"]


def test_an_upload_cut_short_leaves_nothing_in_the_volume(tmp_path, env, source):
    path, _ = take_backup(source, backups_dir=tmp_path / "local")
    volume = tmp_path / "volume"
    volume.mkdir()

    class Cut(io.RawIOBase):
        def __init__(self):
            self.f = path.open("rb")
            self.sent = 0

        def readable(self):
            return True

        def read(self, n=-1):
            if self.sent > 50_000:
                raise ConnectionResetError("gone")
            chunk = self.f.read(n)
            self.sent += len(chunk)
            return chunk

    with fake_exec_server(env=env) as server:
        runner = pod_source(server, source.database).runner
        size = path.stat().st_size
        with pytest.raises((ConnectionResetError, ExecFailed)):
            runner.run(
                ["sh", "-c", _RECEIVE, str(volume), path.name, str(size), "0" * 64],
                stdin=Cut(),
                stdin_size=size,
            )
    for _ in range(50):
        if not list(volume.iterdir()):
            break
        import time

        time.sleep(0.1)
    assert list(volume.iterdir()) == []


def test_a_plain_dump_made_without_clean_still_replaces_the_data(
    tmp_path, postgres_server, source, db
):
    """The daemon's dumps are plain SQL without --clean: restored over a live database."""
    import subprocess

    content = subprocess.run(
        ["pg_dump", "--format=plain", "-d", db],
        env=postgres_server.env(db),
        capture_output=True,
        check=True,
    ).stdout
    path = tmp_path / "continuous-20261126-070000.sql"
    write_with_sidecar(path, content, "plain")
    before = counts(postgres_server, db)
    schema_before = plain_sql(postgres_server, db)
    postgres_server.psql("DELETE FROM student WHERE id > 5", db)
    report = restore_backup(
        path, source, full_reader=None, backups_dir=tmp_path, safety_backup=False
    )
    assert counts(postgres_server, db) == before
    assert plain_sql(postgres_server, db) == schema_before
    assert report.tables == {"public.blobs": 2000, "public.student": 20000}


def test_a_file_changed_after_its_check_is_checked_again(tmp_path, postgres_server, source, db):
    path, info = take_backup(source, backups_dir=tmp_path)
    checked = verify_backup(path, full_reader=None)
    assert checked.still_valid()
    flip_byte(path, info.size // 2)  # e.g. while the user was reading the plan
    assert not checked.still_valid()
    before = counts(postgres_server, db)
    with pytest.raises(CorruptBackup, match="sha256 differs"):
        restore_backup(path, source, full_reader=None, backups_dir=tmp_path, verified=checked)
    assert counts(postgres_server, db) == before


# --- who may read a backup ----------------------------------------------------------------


def test_backups_sidecars_and_parts_are_private_and_so_is_a_new_folder(
    tmp_path, source, env, monkeypatch
):
    """Seen: dumps and sidecars were written 0644 although they hold every student's data."""
    import os
    import stat

    from ops.backups import dump as dump_module

    os.umask(0o022)  # the usual umask: what it lets through is what others would get
    folder = tmp_path / "new" / "backups"
    modes: dict[str, int] = {}
    real_opener = dump_module.open_exclusive

    def spy(path: Path):  # the .part as it is opened, before anything is in it
        f = real_opener(path)
        modes[path.name] = stat.S_IMODE(path.stat().st_mode)
        return f

    path, _ = take_backup(source, backups_dir=folder, fmt="custom", opener=spy)
    assert list(modes.values()) == [0o600] and all(n.endswith(".part") for n in modes)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(sidecar_of(path).stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    # A folder the user made stays as they made it.
    own = tmp_path / "shared"
    own.mkdir(mode=0o750)
    own.chmod(0o750)
    second, _ = take_backup(source, backups_dir=own, fmt="plain")
    assert stat.S_IMODE(own.stat().st_mode) == 0o750
    assert stat.S_IMODE(second.stat().st_mode) == 0o600


def test_an_interrupted_restore_names_its_safety_backup_and_changes_nothing(
    tmp_path, postgres_server, source, db
):
    """Seen: an interrupted restore kept its safety backup but did not say where it was."""
    import contextlib

    from ops.errors import RestoreInterrupted

    path, _ = take_backup(source, backups_dir=tmp_path, fmt="plain")
    postgres_server.psql(CHANGES_AFTER_THE_DUMP, db)
    before = plain_sql(postgres_server, db)

    @contextlib.contextmanager
    def ctrl_c_midway(description, total):
        sent = [0]

        def advance(n):
            sent[0] += n
            if description.startswith("restore") and sent[0] > 100_000:
                raise KeyboardInterrupt

        yield advance

    with pytest.raises(RestoreInterrupted) as caught:
        restore_backup(path, source, full_reader=None, backups_dir=tmp_path, progress=ctrl_c_midway)
    assert caught.value.exit_code == 130
    safety = Path(str(caught.value.context["safety_backup"]))
    assert safety.is_file() and f"the safety backup taken before is {safety}" in str(caught.value)
    assert plain_sql(postgres_server, db) == before


@pytest.mark.parametrize("sidecar", [True, False], ids=["with-sidecar", "without-sidecar"])
def test_a_restore_reads_the_dumps_header_once(tmp_path, source, monkeypatch, sidecar):
    """Seen: one restore asked pgformat for the same header up to three times (the plan,
    the check, the restore); the check's result now carries it."""
    from ops import pgformat
    from ops.backups import session as restore_session
    from ops.config import load_settings

    path, _ = take_backup(source, backups_dir=tmp_path, fmt="custom")
    if not sidecar:
        sidecar_of(path).unlink()
    settings = load_settings(
        {"database": source.database, "backups_dir": str(tmp_path)}, environ={}
    )
    # The pod lookup is the one thing here without a cluster: the local PostgreSQL stands in.
    monkeypatch.setattr(restore_session, "pod_source", lambda _settings: source)
    reads = []
    real_read_header = pgformat.read_header

    def counting(head, **kw):
        reads.append(kw.get("name"))
        return real_read_header(head, **kw)

    monkeypatch.setattr(pgformat, "read_header", counting)
    prepared = restore_session.plan_restore(
        settings, file=path, from_daemon=None, require_sidecar=sidecar, safety_backup=False
    ).work
    report = restore_session.run_restore(prepared)
    assert len(reads) == 1, reads
    assert report.tables == {"public.blobs": 2000, "public.student": 20000}
    checks = " ".join(prepared.verification.checks)
    assert ("sha256 is checked as the file streams" in checks) == sidecar
    assert ("full read by pg_restore" in checks) == (not sidecar)


def test_a_restore_is_a_plan_the_task_renders_asks_and_acts_on(
    tmp_path, postgres_server, source, monkeypatch, capsys
):
    """backup.restore's plan is data (issue 13): its lines, the no-checksum warning and the
    typed confirmation come from ``plan_restore``; ``carry_out`` shows it, asks, acts."""
    from invoke.exceptions import Exit

    from ops.backups import session as restore_session
    from ops.config import load_settings
    from ops.plan import Ask
    from ops.tasks.common import carry_out

    path, _ = take_backup(source, backups_dir=tmp_path, fmt="custom")
    sidecar_of(path).unlink()
    settings = load_settings(
        {"database": source.database, "backups_dir": str(tmp_path)}, environ={}
    )
    monkeypatch.setattr(restore_session, "pod_source", lambda _settings: source)
    plan = restore_session.plan_restore(
        settings, file=path, from_daemon=None, require_sidecar=False, safety_backup=False
    )
    assert plan.title == "backup.restore"
    assert plan.ask == Ask(
        prompt=f"This replaces the data of {source.database!r}. Type the database name to go on:",
        expected=source.database,
    )
    lines = {item.key: item.value for item in plan.items}
    assert lines["database"] == source.database and lines["safety backup"] == "NO"
    assert plan.warnings == (restore_session.NO_CHECKSUM,)
    assert "checksum" not in lines and plan.warnings[0].startswith("no checksum (--no-sidecar)")

    def act(p):
        return restore_session.run_restore(p.work)

    before = counts(postgres_server, source.database)
    postgres_server.psql("DELETE FROM student WHERE id % 2 = 0", source.database)
    assert carry_out(plan, act, dry_run=True) is None
    shown = capsys.readouterr()
    assert "backup.restore would:" in shown.out
    assert "! no checksum (--no-sidecar)" in shown.err  # the warning, as every task shows one
    monkeypatch.setattr("builtins.input", lambda prompt: "not-the-name")
    with pytest.raises(Exit) as refused:
        carry_out(plan, act, dry_run=False)
    assert refused.value.code == 1
    assert counts(postgres_server, source.database) != before  # nothing was restored
    monkeypatch.setattr("builtins.input", lambda prompt: source.database)
    report = carry_out(plan, act, dry_run=False)
    assert report is not None and report.tables["public.student"] == 20000
    assert counts(postgres_server, source.database) == before


def test_backup_now_compresses_at_level_1_by_default(tmp_path, source, monkeypatch):
    """Seen (#16 sweep): the default -Z0 sent 3.3x the bytes of -Z1 and was 3.2x slower on a
    100 Mbit/s link, while level 1 cost nothing on loopback; the default is now 1."""
    from ops.backups import operations
    from ops.config import load_settings

    settings = load_settings(
        {"database": source.database, "backups_dir": str(tmp_path / "default")}, environ={}
    )
    monkeypatch.setattr(operations, "pod_source", lambda _settings: source)
    path, info = operations.backup_now(settings)
    plain, _ = take_backup(source, backups_dir=tmp_path / "level0", compression=0)
    assert settings.backup_compression == 1 and info.compression != "none"
    assert path.stat().st_size < plain.stat().st_size / 2
