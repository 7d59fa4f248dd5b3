"""inv backup.now / backup.restore against the seed's `kubectl exec ... > file` and the limit.

    . /tmp/manifest-lab/env
    .venv/bin/python bench/backup_bench.py [--scale 60] [--random-mib 256]
    .venv/bin/python bench/backup_bench.py --crypto-only [--crypto-mib 512]
    .venv/bin/python bench/backup_bench.py --encryption-only [--scale 10 --random-mib 64]
    .venv/bin/python bench/backup_bench.py --sweep [--levels 0,1,3,6] [--limit-mbit 100]
    .venv/bin/python bench/backup_bench.py --restores-only [--before ../main] [--rounds 5]

Needs the lab cluster (KUBECONFIG, MANIFEST_TEST_KUBE_CONTEXT, MANIFEST_TEST_POSTGRES_IMAGE,
MANIFEST_TEST_REGISTRY*) and kubectl. In a namespace of its own (deleted at the end) it
starts postgres-0 from the lab image, fills studentdb with `pgbench -i -s SCALE` plus a table
of incompressible random bytes, then measures in one run:

  dump     inv backup.now (custom, -Z0; the default is 1) the task, end to end
           kubectl exec ... pg_dump -Fc -Z0 > file          the seed's way, same format
           kubectl exec ... pg_dump -Fc > file              the seed's way, as the seed did it
           pg_dump -Fc -Z0 > /dev/null inside the pod      the limit
           pg_dump -Fc (default zlib) > /dev/null in pod   what compression costs
  exec     the same number of bytes from /dev/zero through the exec API, by our stream
           layer and by kubectl: the transport's own ceiling, without PostgreSQL
  restore  inv backup.restore --yes --no-safety-backup
           kubectl exec -i ... pg_restore ... < file
           pg_restore ... from a file inside the pod       the limit

  crypto   inv backup.now and inv backup.restore again, encrypted with age (a key pair made
           for the run), against the same tasks unencrypted
           and first, without the cluster: the raw age encryption and decryption of ops.agecrypt
           (pyrage) on one core, in 256 KiB writes as the exec layer writes, beside the age CLI
           (--crypto-only: just that)

  sweep    (--sweep: instead of the above) inv backup.now at each pg_dump compression level
           of --levels beside the seed's two kubectl commands, and inv backup.restore of
           the files of --restore-levels beside kubectl exec -i pg_restore < the same file;
           on loopback and through a link of --limit-mbit (a rate-limited TCP proxy in this
           process, in front of the API server, and a kubeconfig that points at it: only
           the bench's own commands are throttled)

  restores (--restores-only: instead of the above) for each of --restore-levels one
           backup.now at that level, then its restore by inv backup.restore and by kubectl
           exec -i pg_restore, the order turning each round; --before DIR adds the restore
           of another checkout's tasks (DIR's tasks.py and ops/, run by this interpreter),
           so before and after come from one run

ops/ and tasks.py (and --before's) are byte-compiled first, as an installed copy is.
Each figure is the median of --rounds rounds (default 3), the pairs taking turns, so a
slow moment of the machine does not land on one side only. Rates are MB of database
(pg_database_size) per second; RSS is the peak of the local process (the task, or
kubectl), from wait4().
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
NS = f"bench-backup-{secrets.token_hex(3)}"
CPU_SECONDS: list[float] = []
PG = 'PGPASSWORD="$POSTGRES_PASSWORD" exec "$0" -U "$POSTGRES_USER" "$@"'


def kubectl(*args: str, stdin: bytes | None = None, check: bool = True) -> bytes:
    context = os.environ.get("MANIFEST_TEST_KUBE_CONTEXT", "manifest-lab")
    result = subprocess.run(
        ["kubectl", "--context", context, *args], input=stdin, capture_output=True, check=False
    )
    if check and result.returncode != 0:
        raise SystemExit(f"kubectl {' '.join(args[:3])}: {result.stderr.decode()[-2000:]}")
    return result.stdout


def in_pod(*argv: str) -> bytes:
    return kubectl("exec", "-n", NS, "postgres-0", "--", *argv)


def timed(
    argv: list[str],
    *,
    stdout_path: Path | None = None,
    stdin_path: Path | None = None,
    env: dict[str, str] | None = None,
    cwd: Path = ROOT,
) -> tuple[float, float]:
    """Run argv; (seconds, peak RSS MiB); its CPU seconds go to CPU_SECONDS."""
    out = stdout_path.open("wb") if stdout_path else subprocess.DEVNULL
    inp = stdin_path.open("rb") if stdin_path else subprocess.DEVNULL
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=out, stdin=inp, stderr=subprocess.PIPE, env=env, cwd=cwd)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    CPU_SECONDS.append(usage.ru_utime + usage.ru_stime)
    proc.returncode = os.waitstatus_to_exitcode(status)
    for f in (out, inp):
        if hasattr(f, "close"):
            f.close()
    if proc.returncode != 0:
        raise SystemExit(f"{argv[:4]} exited {proc.returncode}: {err.decode()[-2000:]}")
    return seconds, usage.ru_maxrss / 1024


def setup(scale: int, random_mib: int) -> int:
    image = os.environ["MANIFEST_TEST_POSTGRES_IMAGE"]
    registry = os.environ["MANIFEST_TEST_REGISTRY"]
    user = os.environ["MANIFEST_TEST_REGISTRY_USER"]
    password = Path(os.environ["MANIFEST_TEST_REGISTRY_PASSWORD_FILE"]).read_text().strip()
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    docker_config = json.dumps({"auths": {registry: {"auth": auth}}})
    manifests = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}},
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/dockerconfigjson",
            "metadata": {"name": "harbor-regcred", "namespace": NS},
            "stringData": {".dockerconfigjson": docker_config},
        },
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "postgres-0", "namespace": NS},
            "spec": {
                "imagePullSecrets": [{"name": "harbor-regcred"}],
                "containers": [
                    {
                        "name": "postgres",
                        "image": image,
                        "env": [
                            {"name": "POSTGRES_USER", "value": "app_user"},
                            {"name": "POSTGRES_PASSWORD", "value": secrets.token_urlsafe(16)},
                            {"name": "POSTGRES_DB", "value": "studentdb"},
                        ],
                        "readinessProbe": {
                            "exec": {
                                "command": ["pg_isready", "-h", "127.0.0.1", "-U", "app_user"]
                            },
                            "periodSeconds": 1,
                        },
                    }
                ],
            },
        },
    ]
    for manifest in manifests:
        kubectl("apply", "-f", "-", stdin=json.dumps(manifest).encode())
    kubectl("wait", "-n", NS, "--for=condition=Ready", "pod/postgres-0", "--timeout=180s")
    print(
        f"namespace {NS}: pgbench -i -s {scale} and {random_mib} MiB of random bytes ...",
        flush=True,
    )
    started = time.perf_counter()
    in_pod("sh", "-c", PG, "pgbench", "-i", "-q", "-s", str(scale), "studentdb")
    rows = random_mib * 1024 * 1024 // 4096
    in_pod(
        "sh",
        "-c",
        PG,
        "psql",
        "-q",
        "-d",
        "studentdb",
        "-c",
        "CREATE TABLE noise AS SELECT g AS id, decode(string_agg(md5(random()::text), ''), "
        f"'hex') AS data FROM generate_series(1, {rows}) g, generate_series(1, 256) "
        "GROUP BY g; ALTER TABLE noise ALTER COLUMN data SET STORAGE EXTERNAL",
    )
    size = int(
        in_pod(
            "sh",
            "-c",
            PG,
            "psql",
            "-At",
            "-d",
            "studentdb",
            "-c",
            "SELECT pg_database_size('studentdb')",
        )
        .decode()
        .strip()
    )
    print(f"  filled in {time.perf_counter() - started:.0f} s; database {size / 1e6:.0f} MB\n")
    return size


# The exec transport alone: `head -c N /dev/zero` in the pod, streamed to /dev/null here.
EXEC_ZEROS = """
import os, sys
from pathlib import Path
from ops.execstream import PodExec
from ops.kube import KubeTarget
kubeconfig, context, namespace, size = sys.argv[1:]
target = KubeTarget(kubeconfig=Path(kubeconfig), context=context, namespace=namespace)
with open(os.devnull, "wb") as sink:
    PodExec(target, "postgres-0").run(["head", "-c", size, "/dev/zero"], stdout=sink)
"""


def crypto_rates(mib: int) -> None:
    """MB/s of age encryption/decryption per CPU second (our threads and the child
    process that encrypts or decrypts counted)."""
    import io
    import shutil

    sys.path.insert(0, str(ROOT))
    from ops import agecrypt

    pair = agecrypt.generate()
    block = os.urandom(256 * 1024)
    total = mib * 1024 * 1024

    class Null:
        def write(self, data: bytes) -> int:
            return len(data)

    class Keep:
        def __init__(self) -> None:
            self.buf = io.BytesIO()

        def write(self, data: bytes) -> int:
            return self.buf.write(data)

    def cpu_seconds() -> float:
        # ours and our children's: the encryption runs in a child process (ops.agepump)
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def measure(label: str, fn: object) -> None:
        assert callable(fn)
        wall, cpu = time.perf_counter(), cpu_seconds()
        fn()
        wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
        print(
            f"  {label:<52} {total / cpu / 1e6:6.0f} MB/s per CPU second "
            f"({total / wall / 1e6:5.0f} MB/s wall)",
            flush=True,
        )

    def encrypt(sink: object) -> None:
        with agecrypt.EncryptingWriter(sink, [pair.recipient]) as w:  # type: ignore[arg-type]
            for _ in range(total // len(block)):
                w.write(block)

    print(f"raw age speed on this machine, {mib} MiB of random bytes:", flush=True)
    cli = agecrypt.age_cli()
    if cli is not None:
        measure("ops.agecrypt encrypt (age CLI child), 256 KiB writes", lambda: encrypt(Null()))
    found = agecrypt.age_cli
    agecrypt.age_cli = lambda: None  # type: ignore[assignment]  # as where age is missing
    measure("ops.agecrypt encrypt (pyrage child), 256 KiB writes", lambda: encrypt(Null()))
    agecrypt.age_cli = found
    # A ciphertext of 64 MiB, decrypted as often as needed for the total (memory stays small).
    keep = Keep()
    reps = max(total // (64 * 1024 * 1024), 1)
    with agecrypt.EncryptingWriter(keep, [pair.recipient]) as w:
        for _ in range(min(total, 64 * 1024 * 1024) // len(block)):
            w.write(block)
    ct = keep.buf.getvalue()
    ids = [
        agecrypt.Identity(
            __import__("pyrage").x25519.Identity.from_str(pair.identity), pair.identity
        )
    ]

    def decrypt() -> None:
        buf = bytearray(256 * 1024)
        for _ in range(reps):
            with agecrypt.DecryptingReader(io.BytesIO(ct), ids, name="bench") as r:
                while r.readinto(buf):
                    pass

    if cli is not None and os.name == "posix":
        measure("ops.agecrypt decrypt (age CLI child), 256 KiB reads", decrypt)
    agecrypt.age_cli = lambda: None  # type: ignore[assignment]
    measure("ops.agecrypt decrypt (pyrage child), 256 KiB reads", decrypt)
    agecrypt.age_cli = found
    age = shutil.which("age")
    if age:
        plain = Path(tempfile.mkdtemp()) / "plain"
        with plain.open("wb") as f:
            for _ in range(total // len(block)):
                f.write(block)

        def age_cli() -> None:
            with plain.open("rb") as f:
                subprocess.run(
                    [age, "-r", pair.recipient], stdin=f, stdout=subprocess.DEVNULL, check=True
                )

        measure("age CLI (Go) encrypt, for reference", age_cli)
        plain.unlink()
        plain.parent.rmdir()


class _Pace:
    """One direction of a link of ``rate`` bytes/s, shared by every connection over it."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.lock = threading.Lock()
        self.free_at = time.monotonic()

    def take(self, n: int) -> None:
        with self.lock:
            now = time.monotonic()
            # at most 20 ms of burst banked while the link was idle
            self.free_at = max(self.free_at, now - 0.02) + n / self.rate
            wait = self.free_at - now
        if wait > 0:
            time.sleep(wait)


class RateLimitedProxy:
    """A TCP proxy on 127.0.0.1 to ``upstream``, each direction paced to ``mbit`` Mbit/s.

    TLS passes through untouched (the API server's certificate names 127.0.0.1).
    """

    def __init__(self, upstream: tuple[str, int], mbit: float) -> None:
        self.upstream = upstream
        self.paces = (_Pace(mbit * 1e6 / 8), _Pace(mbit * 1e6 / 8))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            up, down = self.paces
            threading.Thread(target=self._pump, args=(client, server, up), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, down), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, pace: _Pace) -> None:
        try:
            while data := src.recv(16384):
                pace.take(len(data))
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        # shutdown() ends the accept() in progress; only then is the descriptor closed (a
        # thread left in accept() could take a socket that is later given the same number).
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self._accepting.join()
        self.listener.close()


def proxied_kubeconfig(source: Path, target: Path, mbit: float) -> RateLimitedProxy:
    """Write ``target``: ``source`` with every cluster's server behind one proxy."""
    import yaml

    config = yaml.safe_load(source.read_text())
    servers = {c["cluster"]["server"] for c in config["clusters"]}
    if len(servers) != 1:
        raise SystemExit(f"{source}: expected one API server, found {sorted(servers)}")
    url = urlsplit(servers.pop())
    proxy = RateLimitedProxy((url.hostname or "127.0.0.1", url.port or 443), mbit)
    for cluster in config["clusters"]:
        cluster["cluster"]["server"] = f"https://127.0.0.1:{proxy.port}"
    target.write_text(json.dumps(config))
    target.chmod(0o600)
    return proxy


class LoadSampler:
    """The 1-minute load average every 5 s while the bench runs."""

    def __init__(self) -> None:
        self.samples: list[float] = [os.getloadavg()[0]]
        self.stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self.stop.wait(5):
            self.samples.append(os.getloadavg()[0])

    def summary(self) -> str:
        s = self.samples
        return (
            f"load average (1 min) during the run: median {statistics.median(s):.1f}, "
            f"min {min(s):.1f}, max {max(s):.1f} ({len(s)} samples; 2 cores)"
        )


def kubectl_exec(context: str, *argv: str, stdin: bool = False) -> list[str]:
    flags = ["-i"] if stdin else []
    return ["kubectl", "--context", context, "exec", *flags, "-n", NS, "postgres-0", "--", *argv]


def sweep(
    args: argparse.Namespace,
    *,
    inv: list[str],
    env: dict[str, str],
    context: str,
    work: Path,
    db_size: int,
    pg_dump: list[str],
    restore_args: list[str],
    in_pod_dump: str,
) -> None:
    """Compression levels x links: backup.now and restore against the seed's kubectl."""
    levels = [int(x) for x in args.levels.split(",")]
    restore_levels = [int(x) for x in args.restore_levels.split(",")]
    links: list[tuple[str, dict[str, str]]] = [("loopback", env)]
    proxy = None
    if args.limit_mbit:
        kubeconfig = work / "kubeconfig-limited"
        proxy = proxied_kubeconfig(Path(env["KUBECONFIG"]), kubeconfig, args.limit_mbit)
        links.append((f"{args.limit_mbit:g} Mbit/s", {**env, "KUBECONFIG": str(kubeconfig)}))
    # (link, name) -> seconds per round; name -> bytes; (link, name) -> peak RSS MiB
    times: dict[tuple[str, str], list[float]] = {}
    sizes: dict[str, int] = {}
    peaks: dict[tuple[str, str], float] = {}

    def record(link: str, name: str, seconds: float, rss: float | None, size: int = 0) -> None:
        times.setdefault((link, name), []).append(seconds)
        if size:
            sizes[name] = size
        if rss is not None:
            peaks[(link, name)] = max(peaks.get((link, name), 0.0), rss)
        print(f"  {link:<12} {name:<44} {seconds:6.1f} s", flush=True)

    def dump_dir(level: int) -> Path:
        folder = work / f"z{level}"
        folder.mkdir(exist_ok=True)
        return folder

    def where(folder: Path) -> list[str]:
        return ["--context", context, "--namespace", NS, "--backups-dir", str(folder)]

    sampler = LoadSampler()
    try:
        for n in range(args.rounds):
            print(f"round {n + 1} of {args.rounds}", flush=True)
            for link, link_env in links:
                kubectl_env = link_env
                for level in levels:
                    folder = dump_dir(level)
                    for old in folder.glob("*.dump*"):
                        old.unlink()
                    task = [*inv, "backup.now", "--compression", str(level), *where(folder)]
                    s, rss = timed(task, env=link_env)
                    made = next(folder.glob("*.dump"))
                    record(link, f"inv backup.now -Z{level}", s, rss, made.stat().st_size)
                    if level == levels[0]:
                        # the seed's two ways right after ours, turn about
                        seed_z0 = work / "seed-z0.dump"
                        s, rss = timed(
                            kubectl_exec(context, *pg_dump, "-Z0"),
                            stdout_path=seed_z0,
                            env=kubectl_env,
                        )
                        record(
                            link,
                            "kubectl exec pg_dump -Fc -Z0 > file",
                            s,
                            rss,
                            seed_z0.stat().st_size,
                        )
                    if level == levels[-1]:
                        seed = work / "seed.dump"
                        s, rss = timed(
                            kubectl_exec(context, *pg_dump), stdout_path=seed, env=kubectl_env
                        )
                        record(
                            link,
                            "kubectl exec pg_dump -Fc > file (seed)",
                            s,
                            rss,
                            seed.stat().st_size,
                        )
                for level in restore_levels:
                    made = next(dump_dir(level).glob("*.dump"))
                    task = [
                        *inv,
                        "backup.restore",
                        "--file",
                        str(made),
                        "--yes",
                        "--no-safety-backup",
                        *where(dump_dir(level)),
                    ]
                    s, rss = timed(task, env=link_env)
                    record(link, f"inv backup.restore -Z{level} file", s, rss)
                    s, rss = timed(
                        kubectl_exec(context, *restore_args, stdin=True),
                        stdin_path=made,
                        env=kubectl_env,
                    )
                    record(link, f"kubectl exec -i pg_restore < -Z{level} file", s, rss)
            for level in levels:
                started = time.perf_counter()
                in_pod("sh", "-c", f"{in_pod_dump} -Z{level} >/dev/null")
                record(
                    "in the pod",
                    f"pg_dump -Fc -Z{level} > /dev/null",
                    time.perf_counter() - started,
                    None,
                )
    finally:
        sampler.stop.set()
        if proxy is not None:
            proxy.close()

    print(
        f"\nmedians of {args.rounds} rounds; database {db_size / 1e6:.0f} MB "
        f"(pg_database_size); {sampler.summary()}"
    )
    print(f"{'link':<12} {'':<44} {'time':>8} {'db rate':>10} {'file':>8} {'peak RSS':>9}")
    med = {key: statistics.median(v) for key, v in times.items()}
    for (link, name), secs in med.items():
        size_cell = f"{sizes[name] / 1e6:5.0f} MB" if name in sizes else "       -"
        rss_cell = f"{peaks[(link, name)]:5.0f} MiB" if (link, name) in peaks else "        -"
        rate = db_size / secs / 1e6
        print(f"{link:<12} {name:<44} {secs:6.1f} s {rate:5.0f} MB/s {size_cell} {rss_cell}")
    print("\nratios of the medians (above 1.0 = ours is faster):")
    for link, _ in links:
        z0 = med[(link, "kubectl exec pg_dump -Fc -Z0 > file")]
        seeds = med[(link, "kubectl exec pg_dump -Fc > file (seed)")]
        for level in levels:
            dumped = med[(link, f"inv backup.now -Z{level}")]
            print(
                f"  {link:<12} backup.now -Z{level}: {z0 / dumped:5.2f}x kubectl -Z0, "
                f"{seeds / dumped:5.2f}x the seed (kubectl pg_dump -Fc)"
            )
        for level in restore_levels:
            restored = med[(link, f"inv backup.restore -Z{level} file")]
            theirs = med[(link, f"kubectl exec -i pg_restore < -Z{level} file")]
            print(f"  {link:<12} backup.restore -Z{level} file: {theirs / restored:5.2f}x kubectl")


def restores(
    args: argparse.Namespace,
    *,
    inv: list[str],
    env: dict[str, str],
    context: str,
    work: Path,
    db_size: int,
    restore_args: list[str],
) -> None:
    """inv backup.restore against kubectl exec -i pg_restore of the same file, one file of
    each of --restore-levels, turn about (and --before's checkout beside them)."""
    where = ["--context", context, "--namespace", NS, "--backups-dir", str(work)]
    for level in [int(x) for x in args.restore_levels.split(",")]:
        for old in work.glob("*.dump*"):
            old.unlink()
        timed([*inv, "backup.now", "--compression", str(level), *where], env=env)
        made = next(work.glob("*.dump"))
        task = [*inv, "backup.restore", "--file", str(made), "--yes", "--no-safety-backup", *where]
        ours, theirs = f"inv backup.restore, -Z{level} file", f"kubectl -i pg_restore, -Z{level}"
        contenders: list[tuple[str, list[str], Path | None, Path]] = [
            (ours, task, None, ROOT),
            (theirs, kubectl_exec(context, *restore_args, stdin=True), made, ROOT),
        ]
        if args.before:
            before = Path(args.before).resolve()
            contenders.append((f"{ours} (--before)", task, None, before))
        times: dict[str, list[float]] = {name: [] for name, *_ in contenders}
        cpu: dict[str, list[float]] = {name: [] for name, *_ in contenders}
        sampler = LoadSampler()
        for n in range(args.rounds):
            for name, argv, stdin, cwd in contenders if n % 2 == 0 else contenders[::-1]:
                s, _ = timed(argv, stdin_path=stdin, env=env, cwd=cwd)
                times[name].append(s)
                cpu[name].append(CPU_SECONDS[-1])
                print(f"  round {n + 1}: {name:<40} {s:6.1f} s", flush=True)
        sampler.stop.set()
        print(
            f"\nmedians of {args.rounds} rounds; database {db_size / 1e6:.0f} MB, -Z{level} "
            f"file {made.stat().st_size / 1e6:.0f} MB; {sampler.summary()}"
        )
        med = {name: statistics.median(v) for name, v in times.items()}
        for name, secs in med.items():
            rounds = ", ".join(f"{x:.1f}" for x in times[name])
            print(
                f"  {name:<40} {secs:6.1f} s  local CPU {statistics.median(cpu[name]):4.1f} s"
                f"  (rounds {rounds})"
            )
        print("ratios of the medians (above 1.0 = ours is faster):")
        for name, secs in med.items():
            if name.startswith("inv"):
                print(f"  {name:<40} {med[theirs] / secs:5.2f}x kubectl")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=60)
    parser.add_argument("--random-mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3, help="Each figure is the median")
    parser.add_argument("--keep", action="store_true", help="Keep the namespace afterwards")
    parser.add_argument("--crypto-mib", type=int, default=512, help="Size for the raw age rates")
    parser.add_argument("--crypto-only", action="store_true", help="Only the raw age rates")
    parser.add_argument(
        "--encryption-only",
        action="store_true",
        help="Only backup.now and backup.restore, plain and encrypted (a quick comparison)",
    )
    parser.add_argument(
        "--backups-only",
        action="store_true",
        help="With --encryption-only: backup.now only (a >= 1 GB run in bounded time)",
    )
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="Compression levels x links (loopback and --limit-mbit) instead of the rest",
    )
    parser.add_argument(
        "--restores-only",
        action="store_true",
        help="Only backup.restore against kubectl exec -i pg_restore, turn about",
    )
    parser.add_argument(
        "--before",
        help="With --restores-only: also restore with this checkout's tasks (before/after)",
    )
    parser.add_argument("--levels", default="0,1,3,6", help="pg_dump -Z levels for --sweep")
    parser.add_argument(
        "--restore-levels",
        default="0,1",
        help="Restore the files of these levels (--sweep, --restores-only)",
    )
    parser.add_argument(
        "--limit-mbit", type=float, default=100, help="The limited link (--sweep; 0: none)"
    )
    args = parser.parse_args()
    # As an installed copy is: where PYTHONDONTWRITEBYTECODE is set (as in some sandboxes),
    # every `inv` would otherwise compile ops/ from source (~25 ms a process).
    for tree in [ROOT, *([Path(args.before).resolve()] if args.before else [])]:
        subprocess.run(
            [sys.executable, "-m", "compileall", "-q", "ops", "tasks.py"], cwd=tree, check=True
        )
    if not args.sweep and not args.restores_only:
        crypto_rates(args.crypto_mib)
    if args.crypto_only:
        return
    for var in ("KUBECONFIG", "MANIFEST_TEST_POSTGRES_IMAGE", "MANIFEST_TEST_REGISTRY"):
        if not os.environ.get(var):
            raise SystemExit(f"{var} is not set: source /tmp/manifest-lab/env first")
    context = os.environ.get("MANIFEST_TEST_KUBE_CONTEXT", "manifest-lab")
    work = Path(tempfile.mkdtemp(prefix="backup-bench-"))
    try:
        db_size = setup(args.scale, args.random_mib)
        # Let the fill's writes and autovacuum settle, so they slow no one measurement.
        in_pod("sh", "-c", PG, "psql", "-q", "-d", "studentdb", "-c", "VACUUM ANALYZE")
        in_pod("sh", "-c", PG, "psql", "-q", "-d", "studentdb", "-c", "CHECKPOINT")
        inv = [sys.executable, "-m", "invoke"]
        where = ["--context", context, "--namespace", NS, "--backups-dir", str(work)]
        dump_flags = ["--compression", "0"]  # the rows below say -Z0, whatever the default
        # Unencrypted unless said so (a secrets/backup_recipients.txt here must not count).
        env = {**os.environ, "MANIFEST_BACKUP_KEEP": "50", "MANIFEST_BACKUP_RECIPIENTS": ""}
        sys.path.insert(0, str(ROOT))
        from ops import agecrypt

        pair = agecrypt.generate()
        identity = work / "identity.txt"
        agecrypt.write_identity_file(identity, pair)
        sealed_env = {
            **env,
            "MANIFEST_BACKUP_RECIPIENTS": pair.recipient,
            "MANIFEST_BACKUP_IDENTITY_FILE": str(identity),
        }
        pg_dump = ["sh", "-c", PG, "pg_dump", "-d", "studentdb", "-Fc"]
        restore_args = [
            *("sh", "-c", PG, "pg_restore", "-d", "studentdb", "--single-transaction"),
            *("--clean", "--if-exists", "--no-owner", "--exit-on-error"),
        ]
        in_pod_dump = 'PGPASSWORD="$POSTGRES_PASSWORD" pg_dump -U "$POSTGRES_USER" -d studentdb -Fc'
        # name -> (kind, seconds per round, peak RSS MiB per round, local CPU per round, bytes)
        runs: dict[str, tuple[str, list[float], list[float], list[float], int]] = {}

        def record(kind: str, name: str, seconds: float, rss: float | None, size: int) -> None:
            entry = runs.setdefault(name, (kind, [], [], [], size))
            entry[1].append(seconds)
            if rss is not None:
                entry[2].append(rss)
                entry[3].append(CPU_SECONDS[-1])
            print(f"  round {len(entry[1])}: {name:<46} {seconds:6.1f} s", flush=True)

        def in_pod_timed(kind: str, name: str, script: str) -> None:
            started = time.perf_counter()
            in_pod("sh", "-c", script)
            record(kind, name, time.perf_counter() - started, None, 0)

        if args.sweep:
            sweep(
                args,
                inv=inv,
                env=env,
                context=context,
                work=work,
                db_size=db_size,
                pg_dump=pg_dump,
                restore_args=restore_args,
                in_pod_dump=in_pod_dump,
            )
            return
        if args.restores_only:
            restores(
                args,
                inv=inv,
                env=env,
                context=context,
                work=work,
                db_size=db_size,
                restore_args=restore_args,
            )
            return
        ours = work / "none-yet"
        sampler = LoadSampler()
        for n in range(args.rounds):
            for old in work.glob("*.dump*"):
                old.unlink()  # (.dump, .dump.age and their sidecars)

            def plain_dump() -> None:
                s, rss = timed([*inv, "backup.now", *dump_flags, *where], env=env)
                made = next(work.glob("*.dump"))
                record("dump", "inv backup.now (-Fc -Z0)", s, rss, made.stat().st_size)

            def sealed_dump() -> None:
                s, rss = timed([*inv, "backup.now", *dump_flags, *where], env=sealed_env)
                made = next(work.glob("*.dump.age"))
                record("crypto", "inv backup.now, age-encrypted", s, rss, made.stat().st_size)

            # Which goes first alternates: the first of a pair reads the database cold.
            for step in (plain_dump, sealed_dump) if n % 2 == 0 else (sealed_dump, plain_dump):
                step()
            ours, sealed = next(work.glob("*.dump")), next(work.glob("*.dump.age"))
            size = ours.stat().st_size
            restore_task = ["backup.restore", "--file", str(ours), "--yes", "--no-safety-backup"]
            sealed_task = ["backup.restore", "--file", str(sealed), "--yes", "--no-safety-backup"]
            if args.encryption_only and args.backups_only:
                continue
            if args.encryption_only:
                s, rss = timed([*inv, *restore_task, *where], env=env)
                record("restore", "inv backup.restore (one transaction)", s, rss, 0)
                s, rss = timed([*inv, *sealed_task, *where], env=sealed_env)
                record("crypto", "inv backup.restore, age-encrypted", s, rss, 0)
                continue
            seed_z0 = work / "seed-z0.dump"
            s, rss = timed(kubectl_exec(context, *pg_dump, "-Z0"), stdout_path=seed_z0)
            record("dump", "kubectl exec pg_dump -Fc -Z0 > file", s, rss, seed_z0.stat().st_size)
            seed = work / "seed.dump"
            s, rss = timed(kubectl_exec(context, *pg_dump), stdout_path=seed)
            record("dump", "kubectl exec pg_dump -Fc > file (seed)", s, rss, seed.stat().st_size)
            in_pod_timed(
                "dump", "in the pod: pg_dump -Fc -Z0 > /dev/null", f"{in_pod_dump} -Z0 >/dev/null"
            )
            in_pod_timed(
                "dump", "in the pod: pg_dump -Fc (zlib) > /dev/null", f"{in_pod_dump} >/dev/null"
            )
            # the transport alone, as many bytes as our dump
            count = str(size)
            s, rss = timed(
                [sys.executable, "-c", EXEC_ZEROS, os.environ["KUBECONFIG"], context, NS, count]
            )
            record("exec", "our stream: head -c N /dev/zero > /dev/null", s, rss, size)
            s, rss = timed(
                kubectl_exec(context, "head", "-c", count, "/dev/zero"),
                stdout_path=Path(os.devnull),
            )
            record("exec", "kubectl exec head -c N /dev/zero > /dev/null", s, rss, size)
            # restores
            s, rss = timed([*inv, *restore_task, *where], env=env)
            record("restore", "inv backup.restore (one transaction)", s, rss, 0)
            s, rss = timed([*inv, *sealed_task, *where], env=sealed_env)
            record("crypto", "inv backup.restore, age-encrypted", s, rss, 0)
            s, rss = timed(kubectl_exec(context, *restore_args, stdin=True), stdin_path=ours)
            record("restore", "kubectl exec -i pg_restore < file", s, rss, 0)
            in_pod("sh", "-c", f"{in_pod_dump} -Z0 -f /tmp/in-pod.dump")
            started = time.perf_counter()
            in_pod(*restore_args, "/tmp/in-pod.dump")
            record(
                "restore",
                "in the pod: pg_restore from a local file",
                time.perf_counter() - started,
                None,
                0,
            )

        print(
            f"\nmedians of {args.rounds} rounds; database {db_size / 1e6:.0f} MB\n"
            f"{'':<8} {'':<46} {'time':>9} {'db rate':>12} {'peak RSS':>12} "
            f"{'local CPU':>9}  {'bytes':>11}"
        )
        by: dict[str, float] = {}
        for name, (kind, seconds, rss_list, cpu, size) in runs.items():
            secs = statistics.median(seconds)
            by[name] = secs
            rss_text = f"{max(rss_list):8.0f}" if rss_list else "       -"
            cpu_text = f"{statistics.median(cpu):6.1f} s" if cpu else "       -"
            print(
                f"{kind:<8} {name:<46} {secs:7.1f} s {db_size / secs / 1e6:7.0f} MB/s "
                f"{rss_text} MiB {cpu_text}  {size / 1e6:8.0f} MB"
            )
        print("(peak RSS: the largest of the rounds; exec rows move the dump's bytes)")
        sampler.stop.set()
        print(sampler.summary())

        print("\nratios of the medians (above 1.0 = ours is faster):")
        dump = by["inv backup.now (-Fc -Z0)"]
        restore = by.get("inv backup.restore (one transaction)", 0.0)
        encryption = (
            (
                "encrypted vs plain backup.now",
                "inv backup.now (-Fc -Z0)",
                by["inv backup.now, age-encrypted"],
            ),
            *(
                []
                if args.backups_only
                else [
                    (
                        "encrypted vs plain backup.restore",
                        "inv backup.restore (one transaction)",
                        by["inv backup.restore, age-encrypted"],
                    )
                ]
            ),
        )
        for label, theirs, mine in (
            encryption
            if args.encryption_only
            else (
                ("backup.now vs kubectl exec -Z0", "kubectl exec pg_dump -Fc -Z0 > file", dump),
                (
                    "backup.now vs the seed (-Fc zlib)",
                    "kubectl exec pg_dump -Fc > file (seed)",
                    dump,
                ),
                ("backup.now vs the limit", "in the pod: pg_dump -Fc -Z0 > /dev/null", dump),
                (
                    "backup.now vs the bare exec transport",
                    "kubectl exec head -c N /dev/zero > /dev/null",
                    dump,
                ),
                (
                    "our stream vs kubectl, bare transport",
                    "kubectl exec head -c N /dev/zero > /dev/null",
                    by["our stream: head -c N /dev/zero > /dev/null"],
                ),
                ("restore vs kubectl exec -i", "kubectl exec -i pg_restore < file", restore),
                ("restore vs the limit", "in the pod: pg_restore from a local file", restore),
                *encryption,
            )
        ):
            print(f"  {label:<40} {by[theirs] / mine:.2f}x")
    finally:
        if not args.keep:
            kubectl("delete", "namespace", NS, "--wait=false", check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
