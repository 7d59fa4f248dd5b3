"""A real PostgreSQL server for tests: initdb in a temporary folder, started on a free port.

PostgreSQL refuses to run as root, so when the tests run as root the server runs as the
``postgres`` system user (Debian's packages create it; CI installs them).
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.services import missing


def find_pg_bindir() -> Path | None:
    """The folder holding initdb/pg_ctl/postgres (PATH first, then Debian's layout)."""
    found = shutil.which("pg_ctl")
    candidates = [Path(found).resolve().parent] if found else []
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for candidate in candidates:
        if all((candidate / tool).exists() for tool in ("initdb", "pg_ctl", "postgres")):
            return candidate
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PostgresServer:
    """A running PostgreSQL; ``superuser``/``password`` log in over TCP on 127.0.0.1."""

    bindir: Path
    root: Path
    port: int
    superuser: str = "postgres"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    host: str = "127.0.0.1"
    run_as: str | None = None

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def client_bindir(self) -> Path:
        """Where pg_dump/pg_restore/psql of the same major version live."""
        return self.bindir

    def env(self, dbname: str = "postgres") -> dict[str, str]:
        """Environment for libpq clients (psql, pg_dump, pg_restore) pointed at this server."""
        return {
            **os.environ,
            "PGHOST": self.host,
            "PGPORT": str(self.port),
            "PGUSER": self.superuser,
            "PGPASSWORD": self.password,
            "PGDATABASE": dbname,
            # A stopped or frozen server must fail a test, not hang the whole session.
            "PGCONNECT_TIMEOUT": "10",
        }

    def dsn(self, dbname: str = "postgres") -> str:
        return (
            f"postgresql://{self.superuser}:{self.password}@{self.host}:{self.port}/{dbname}"
            "?connect_timeout=10"
        )

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run SQL with psql (ON_ERROR_STOP); returns unaligned, tuples-only output."""
        result = subprocess.run(
            [
                str(self.bindir / "psql"),
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                dbname,
                "-c",
                sql,
            ],
            env=self.env(dbname),
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise AssertionError(f"psql failed: {result.stderr.strip()}")
        return result.stdout.strip()

    def create_database(self, name: str) -> str:
        self.psql(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _as_owner(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", self.run_as, "--", *argv] if self.run_as else argv

    def _run(self, argv: list[str]) -> None:
        result = subprocess.run(self._as_owner(argv), capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {result.stderr.strip() or result.stdout}")

    def init(self) -> None:
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self.run_as:
            shutil.chown(pwfile, self.run_as)
        self._run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.datadir),
                "-U",
                self.superuser,
                f"--pwfile={pwfile}",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ]
        )
        pwfile.unlink()

    def start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} "
            f"-c unix_socket_directories={self.root} -c fsync=off "
            "-c max_connections=100 -c shared_buffers=32MB"
        )
        self._run(
            [
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.datadir),
                "-l",
                str(self.root / "log"),
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "start",
            ]
        )

    def stop(self) -> None:
        self._run(
            [str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "fast", "-w", "stop"]
        )

    def is_running(self) -> bool:
        return (self.datadir / "postmaster.pid").exists()


def start_postgres() -> PostgresServer:
    bindir = find_pg_bindir()
    if bindir is None:
        missing("PostgreSQL server binaries (initdb, pg_ctl) not found; install postgresql-15")
    run_as = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            missing("running as root and no 'postgres' user to run the server as")
        run_as = "postgres"
    root = Path(tempfile.mkdtemp(prefix="manifest-pg-"))
    root.chmod(0o755)
    if run_as:
        shutil.chown(root, run_as, run_as)
    server = PostgresServer(bindir=bindir, root=root, port=free_port(), run_as=run_as)
    server.init()
    server.start()
    return server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL for the whole test session (skips, or fails under CI, without it)."""
    server = start_postgres()
    try:
        yield server
    finally:
        if server.is_running():
            server.stop()
        shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture
def fresh_database(postgres_server: PostgresServer) -> Iterator[str]:
    """An empty database with a unique name, dropped after the test."""
    name = "t_" + secrets.token_hex(6)
    postgres_server.create_database(name)
    try:
        yield name
    finally:
        postgres_server.drop_database(name)
