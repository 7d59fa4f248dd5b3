"""How fast, and how lean, is the exec stream? Linearity from 16 MiB to 1 GiB.

    .venv/bin/python bench/execstream_bench.py            # all cases (~2 minutes)
    .venv/bin/python bench/execstream_bench.py --quick    # 16 and 256 MiB only

Every case runs in a fresh child process (so peak RSS is that case's own) against one
FakeExecServer process (the Kubernetes exec wire protocol over loopback, running the
command as a real process). Cases, all moving the same bytes of ``head -c N /dev/zero``:

  pipe       the floor: the bytes read from a local pipe in 256 KiB chunks, no websocket
  ours       ops.execstream.PodExec (kubernetes.stream handshake, direct frame reads)
  websocket  websocket-client alone (our own handshake, same frame loop): the handshake's
             cost is nil, so ours keeps the official client's auth/TLS/proxy handling
  stock      kubernetes 37's own loop: WSClient.update() + read_stdout() (quadratic)
  upload     ours, the other way: N bytes of stdin into the pod (``cat > /dev/null``)

Printed: seconds, MB/s, peak RSS, and ratios against the pipe floor measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

    from ops.execstream import PodExec

MiB = 1024 * 1024
CHUNK = 256 * 1024


class _Null:
    def __init__(self) -> None:
        self.n = 0

    def write(self, data: bytes | memoryview) -> int:
        self.n += len(data)
        return len(data)


class _Zeros:
    def __init__(self, size: int) -> None:
        self.left = size
        self.block = bytes(CHUNK)

    def read(self, n: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        take = min(n if n > 0 else CHUNK, self.left, CHUNK)
        self.left -= take
        return self.block[:take]


def _target() -> object:
    from ops.kube import KubeTarget

    return KubeTarget(kubeconfig=None, context="bench", namespace="bench")


def _factory(host: str) -> Callable[[object], ApiClient]:
    def make(_target: object) -> ApiClient:
        from kubernetes.client import ApiClient, Configuration

        return ApiClient(Configuration(host=host))

    return make


def case_pipe(size: int, _host: str) -> int:
    proc = subprocess.Popen(["head", "-c", str(size), "/dev/zero"], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    n = 0
    while chunk := proc.stdout.read1(CHUNK):  # type: ignore[attr-defined]
        n += len(chunk)
    proc.wait()
    return n


_RUNNERS: dict[str, PodExec] = {}


def _runner(host: str) -> PodExec:
    """One runner per API server, as a task uses it: it learns the exec protocol once (in
    the warm-up), so a measured upload is the upload alone."""
    from ops.execstream import PodExec

    if host not in _RUNNERS:
        _RUNNERS[host] = PodExec(_target(), "p", client_factory=_factory(host))  # type: ignore[arg-type]
    return _RUNNERS[host]


def case_ours(size: int, host: str) -> int:
    sink = _Null()
    _runner(host).run(
        ["head", "-c", str(size), "/dev/zero"],
        stdout=sink,  # type: ignore[arg-type]
    )
    return sink.n


def case_upload(size: int, host: str) -> int:
    result = _runner(host).run(
        ["sh", "-c", "cat > /dev/null"],
        stdin=_Zeros(size),  # type: ignore[arg-type]
        stdin_size=size,
    )
    return result.stdin_bytes


def case_websocket(size: int, host: str) -> int:
    from urllib.parse import urlencode

    from websocket import ABNF, WebSocket

    query = urlencode(
        [
            ("command", "head"),
            ("command", "-c"),
            ("command", str(size)),
            ("command", "/dev/zero"),
            ("stdout", "true"),
            ("stderr", "true"),
        ]
    )
    ws = WebSocket()
    ws.connect(  # type: ignore[no-untyped-call]
        host.replace("http://", "ws://") + f"/api/v1/namespaces/bench/pods/p/exec?{query}",
        header=["sec-websocket-protocol: v5.channel.k8s.io,v4.channel.k8s.io"],
    )
    n = 0
    while True:
        opcode, frame = ws.recv_data_frame(True)
        if opcode == ABNF.OPCODE_CLOSE:
            break
        if opcode == ABNF.OPCODE_BINARY and frame.data and frame.data[0] == 1:
            n += len(frame.data) - 1
    ws.close()
    return n


def case_stock(size: int, host: str) -> int:
    from kubernetes.client import CoreV1Api
    from kubernetes.stream import stream

    api = CoreV1Api(_factory(host)(None))
    resp = stream(
        api.connect_get_namespaced_pod_exec,
        "p",
        "bench",
        command=["head", "-c", str(size), "/dev/zero"],
        stdin=False,
        stdout=True,
        stderr=True,
        tty=False,
        _preload_content=False,
        binary=True,
    )
    n = 0
    while resp.is_open():
        resp.update(timeout=1)
        if resp.peek_stdout():
            n += len(resp.read_stdout())
    n += len(resp.read_stdout() or b"")
    return n


CASES = {
    "pipe": case_pipe,
    "ours": case_ours,
    "websocket": case_websocket,
    "stock": case_stock,
    "upload": case_upload,
}


def run_one(case: str, size: int, host: str) -> None:
    import kubernetes.client
    import kubernetes.stream
    import websocket

    import ops.execstream

    del kubernetes, websocket, ops
    # Imports and the client's first-call setup (~1.5 s of pydantic schema building in
    # kubernetes 37) are a constant per task run, not part of the rate: warm up first.
    CASES[case](1, host)
    started = time.perf_counter()
    moved = CASES[case](size, host)
    seconds = time.perf_counter() - started
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "bytes": moved, "rss_mib": rss_kib / 1024}))


def measure(case: str, size: int, host: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--one", case, str(size), host],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    if result["bytes"] != size:
        raise SystemExit(f"{case} moved {result['bytes']} bytes, expected {size}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--one", nargs=3, metavar=("CASE", "SIZE", "HOST"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        run_one(args.one[0], int(args.one[1]), args.one[2])
        return

    sizes = [16, 256] if args.quick else [16, 64, 256, 1024]
    stock_sizes = [16] if args.quick else [16, 32, 64]
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.exec_server"],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        host = server.stdout.readline().strip()
        print(f"FakeExecServer at {host}; {os.cpu_count()} CPUs; chunk {CHUNK // 1024} KiB\n")
        print(
            f"{'case':<10} {'size':>9} {'seconds':>8} {'MB/s':>8} {'RSS MiB':>8} "
            f"{'vs pipe':>8} {'s per GiB':>10}"
        )
        floor: dict[int, float] = {}
        per_gib: dict[str, list[float]] = {}
        for case in ("pipe", "ours", "websocket", "upload", "stock"):
            for mib in stock_sizes if case == "stock" else sizes:
                r = measure(case, mib * MiB, host)
                if case == "pipe":
                    floor[mib] = r["seconds"]
                mbs = mib * MiB / r["seconds"] / 1e6
                ratio_text = f"{floor[mib] / r['seconds']:7.2f}x" if mib in floor else "       -"
                spg = r["seconds"] * 1024 / mib
                per_gib.setdefault(case, []).append(spg)
                print(
                    f"{case:<10} {mib:>5} MiB {r['seconds']:>8.2f} {mbs:>8.0f} "
                    f"{r['rss_mib']:>8.0f} {ratio_text} {spg:>10.2f}"
                )
        print(
            "\nLinearity (seconds per GiB at the largest size / at the smallest; 1.0 = linear,"
            " below 1: a per-exec constant amortised):"
        )
        for case, values in per_gib.items():
            print(f"  {case:<10} {values[-1] / values[0]:.2f}")
    finally:
        if server.stdin:
            server.stdin.close()
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
