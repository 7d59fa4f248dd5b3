"""Throughput and latency of the student API: GET /api/student (100 rows) vs /health/live.

Starts its own PostgreSQL (the test fixture's initdb server) and one ``python -m student_api``
process on loopback, seeds the rows, then drives each endpoint for a bounded time at the
same concurrency. The liveness endpoint (no database, tiny body) is the baseline measured in
the same run, so the ratio says what the database round trip and 100-row serialisation cost.
Server CPU is the app process's; database CPU is PostgreSQL's (postmaster and backends) over
the same interval, so work moved from the app into the database shows up too.

    .venv/bin/python bench/app_bench.py                 # wrk if installed, else Python
    .venv/bin/python bench/app_bench.py --loadgen python --duration 5
    .venv/bin/python bench/app_bench.py --before main --rounds 3   # this tree vs main's app

``--before REF`` runs a second app from git ref REF's ``app/`` (same venv, same database)
in the same run, and the rounds interleave the two (each round in the other order than the
last), so a busy machine slows both alike; both get the same wrk settings; figures are
medians over the rounds.

Load generator: Debian's ``wrk`` (apt-get install wrk) is preferred; it needs little CPU,
which matters on a 2-core machine where generator and server share the cores. The Python
fallback (aiohttp, asyncio) is itself CPU-bound and understates the server.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.postgres import PostgresServer, start_postgres  # noqa: E402

LIVE = "/health/live"
LIST = "/api/student"


@dataclass(frozen=True, kw_only=True)
class Figures:
    path: str
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float
    server_cpu_s: float = 0.0
    database_cpu_s: float = 0.0

    @property
    def cpu_ms_per_request(self) -> float:
        return self.server_cpu_s * 1000 / self.requests if self.requests else 0.0

    @property
    def database_cpu_ms_per_request(self) -> float:
        return self.database_cpu_s * 1000 / self.requests if self.requests else 0.0

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if match is None:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def run_wrk(url: str, path: str, *, connections: int, duration: int) -> Figures:
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{duration}s",
            "--latency",
            "--timeout",
            "5s",
            url + path,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=duration + 30,
    ).stdout
    done = re.search(r"(\d+) requests in ([\d.]+)(ms|s)", out)
    p50 = re.search(r"^\s*50%\s+(\S+)\s*$", out, re.M)
    p99 = re.search(r"^\s*99%\s+(\S+)\s*$", out, re.M)
    if not (done and p50 and p99):
        raise RuntimeError(f"could not read wrk's output:\n{out}")
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    errors = int(non_2xx.group(1)) if non_2xx else 0
    if socket_errors:
        errors += sum(int(g) for g in socket_errors.groups())
    seconds = float(done.group(2)) / (1000.0 if done.group(3) == "ms" else 1.0)
    return Figures(
        path=path,
        requests=int(done.group(1)),
        errors=errors,
        seconds=seconds,
        p50_ms=_ms(p50.group(1)),
        p99_ms=_ms(p99.group(1)),
    )


async def _python_load(url: str, path: str, connections: int, duration: float) -> Figures:
    import aiohttp

    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=5.0)
    async with aiohttp.ClientSession(url, connector=connector, timeout=timeout) as client:
        stop_at = time.perf_counter() + duration

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                try:
                    async with client.get(path) as response:
                        await response.read()
                        if response.status != 200:
                            errors += 1
                except (aiohttp.ClientError, TimeoutError):
                    errors += 1
                latencies.append(time.perf_counter() - started)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        seconds = time.perf_counter() - began
    cuts = statistics.quantiles(latencies, n=100)
    return Figures(
        path=path,
        requests=len(latencies),
        errors=errors,
        seconds=seconds,
        p50_ms=cuts[49] * 1000,
        p99_ms=cuts[98] * 1000,
    )


def run_python(url: str, path: str, *, connections: int, duration: int) -> Figures:
    return asyncio.run(_python_load(url, path, connections, duration))


def start_app(
    server: PostgresServer,
    database: str,
    port: int,
    log: Path,
    source: Path | None = None,
) -> subprocess.Popen[bytes]:
    """``python -m student_api``; from ``source`` (a folder holding student_api/) if given."""
    env = {
        **os.environ,
        "DB_HOST": server.host,
        "DB_PORT": str(server.port),
        "DB_NAME": database,
        "DB_USER": server.superuser,
        "DB_PASSWORD": server.password,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "SHUTDOWN_DELAY": "0",
        "LOG_LEVEL": "warning",
    }
    if source is not None:
        env["PYTHONPATH"] = str(source)
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "student_api"], env=env, stdout=out, stderr=subprocess.STDOUT
        )


def export_app(ref: str, into: Path) -> Path:
    """The app's package and migrations as git ref ``ref`` has them, under ``into``."""
    archive = subprocess.run(
        [
            "git",
            "-C",
            str(REPO),
            "archive",
            ref,
            "app/student_api",
            "app/alembic",
            "app/alembic.ini",
        ],
        capture_output=True,
        check=True,
    ).stdout
    with tempfile.TemporaryFile() as tmp:
        tmp.write(archive)
        tmp.seek(0)
        with tarfile.open(fileobj=tmp) as tar:
            tar.extractall(into, filter="data")
    return into / "app"


def stop_app(app: subprocess.Popen[bytes]) -> None:
    app.send_signal(signal.SIGTERM)
    try:
        app.wait(timeout=30)
    except subprocess.TimeoutExpired:
        app.kill()


def median_figures(runs: list[Figures]) -> Figures:
    """One Figures of medians (rps via requests over the median time per request)."""
    first = runs[0]
    rps = statistics.median(f.rps for f in runs)
    cpu = statistics.median(f.cpu_ms_per_request for f in runs)
    database_cpu = statistics.median(f.database_cpu_ms_per_request for f in runs)
    return Figures(
        path=first.path,
        requests=round(rps * 1000),
        errors=sum(f.errors for f in runs),
        seconds=1000.0,
        p50_ms=statistics.median(f.p50_ms for f in runs),
        p99_ms=statistics.median(f.p99_ms for f in runs),
        server_cpu_s=cpu * rps,
        database_cpu_s=database_cpu * rps,
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def database_cpu_seconds(server: PostgresServer) -> float:
    """CPU time of the PostgreSQL server: the postmaster and its children alive now.

    Backends that exited in between are not counted; the apps' pooled connections live
    through a run, so their backends are.
    """
    try:
        postmaster = int((server.datadir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError):
        return 0.0
    total = cpu_seconds(postmaster)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == postmaster:
            total += cpu_seconds(int(stat.parent.name))
    return total


def measure(
    run: Callable[..., Figures],
    pid: int,
    server: PostgresServer,
    url: str,
    path: str,
    **kw: int,
) -> Figures:
    before, database_before = cpu_seconds(pid), database_cpu_seconds(server)
    figures = run(url, path, **kw)
    return replace(
        figures,
        server_cpu_s=cpu_seconds(pid) - before,
        database_cpu_s=database_cpu_seconds(server) - database_before,
    )


def wait_ready(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the app did not become ready")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per endpoint (max 60)")
    parser.add_argument("--connections", type=int, default=50, help="concurrent connections")
    parser.add_argument("--rows", type=int, default=100, help="students in the table")
    parser.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument(
        "--before", metavar="REF", help="also run the app of git ref REF, interleaved (e.g. main)"
    )
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds (medians)")
    args = parser.parse_args()
    duration = min(max(args.duration, 1), 60)
    rounds = min(max(args.rounds, 1), 9)
    loadgen = args.loadgen
    if loadgen == "auto":
        loadgen = "wrk" if shutil.which("wrk") else "python"
    run = run_wrk if loadgen == "wrk" else run_python

    server = start_postgres()
    apps: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    runs: dict[tuple[str, str], list[Figures]] = {}
    try:
        database = server.create_database("bench")
        sources: dict[str, Path | None] = {"this tree": None}
        if args.before:
            sources[f"before ({args.before})"] = export_app(args.before, server.root / "before")
        for name, source in sources.items():
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            log = server.root / f"app-{len(apps)}.log"
            apps[name] = (start_app(server, database, port, log, source), url)
            wait_ready(url)
        server.psql(
            "INSERT INTO student (name, age) "
            f"SELECT 'Student ' || i, 18 + i % 50 FROM generate_series(1, {args.rows}) i",
            database,
        )
        answers = {httpx.get(url + LIST).content for _, url in apps.values()}
        assert len(answers) == 1, "the apps answer GET /api/student differently"
        assert len(httpx.get(next(iter(apps.values()))[1] + LIST).json()) == min(args.rows, 100)
        # Warm up every path (connections in the pool, code paths imported).
        for _, url in apps.values():
            for path in (LIVE, LIST):
                run(url, path, connections=args.connections, duration=1)
        for round_ in range(rounds):
            # Odd rounds run the apps in the opposite order, so neither is always the one
            # measured first (or right after the other's heaviest endpoint).
            order = list(apps.items())
            for name, (app, url) in order[::-1] if round_ % 2 else order:
                for path in (LIVE, LIST):
                    figures = measure(
                        run,
                        app.pid,
                        server,
                        url,
                        path,
                        connections=args.connections,
                        duration=duration,
                    )
                    runs.setdefault((name, path), []).append(figures)
    finally:
        for app, _ in apps.values():
            stop_app(app)
        if server.is_running():
            server.stop()
        shutil.rmtree(server.root, ignore_errors=True)

    print(
        f"student API on loopback: {args.connections} connections, {duration}s per endpoint, "
        f"{rounds} round(s) (medians), load generator {loadgen}, "
        f"{os.cpu_count()} CPUs shared by server and generator"
    )
    print(
        f"{'app':<20}{'endpoint':<32}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'server CPU ms/req':>19}{'database CPU ms/req':>21}{'errors':>8}"
    )
    medians = {key: median_figures(figs) for key, figs in runs.items()}
    for name in apps:
        for path, label in (
            (LIVE, f"GET {LIVE} (baseline)"),
            (LIST, f"GET {LIST} ({args.rows} rows)"),
        ):
            fig = medians[(name, path)]
            print(
                f"{name:<20}{label:<32}{fig.rps:>8.0f}{fig.p50_ms:>9.2f}{fig.p99_ms:>9.2f}"
                f"{fig.cpu_ms_per_request:>19.3f}{fig.database_cpu_ms_per_request:>21.3f}"
                f"{fig.errors:>8}"
            )
    for name in apps:
        live, listing = medians[(name, LIVE)], medians[(name, LIST)]
        cpu_ratio = (
            f"{listing.cpu_ms_per_request / live.cpu_ms_per_request:.1f}x"
            if live.cpu_ms_per_request
            else "n/a (no /proc)"
        )
        print(
            f"{name}: list/live throughput {listing.rps / live.rps:.2f}x, "
            f"p50 {listing.p50_ms / live.p50_ms:.1f}x, p99 {listing.p99_ms / live.p99_ms:.1f}x, "
            f"server CPU per request {cpu_ratio}"
        )
    if args.before:
        now, before = (medians[(name, LIST)] for name in apps)
        cpu_gain = (
            f"{before.cpu_ms_per_request / now.cpu_ms_per_request:.2f}x less"
            if now.cpu_ms_per_request
            else "n/a"
        )
        print(
            f"GET {LIST}, this tree vs {args.before}: req/s {now.rps / before.rps:.2f}x, "
            f"p99 {now.p99_ms / before.p99_ms:.2f}x, server CPU per request {cpu_gain}"
        )
    return 1 if any(f.errors for figs in runs.values() for f in figs) else 0


if __name__ == "__main__":
    sys.exit(main())
