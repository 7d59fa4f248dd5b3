"""How long `inv --list` takes, against a bare Invoke floor measured in the same run.

The floor is a temporary tasks.py with 10 trivial tasks, listed by the same interpreter.
Target: manifest's `inv --list` within 1.5x the floor. Prints both medians and the ratio.

    .venv/bin/python bench/startup_bench.py [--runs 21]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_RATIO = 1.5
FLOOR_TASKS = "from invoke import task\n\n" + "\n".join(
    f"@task\ndef trivial_{i}(c):\n    '''Trivial task {i}.'''\n" for i in range(10)
)


def time_list(search_root: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "invoke", "--search-root", str(search_root), "--list"],
        cwd=search_root,
        stdout=subprocess.DEVNULL,
        check=True,
    )
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21, help="runs of each (median is kept)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as floor_dir:
        floor_root = Path(floor_dir)
        (floor_root / "tasks.py").write_text(FLOOR_TASKS, encoding="utf-8")
        time_list(floor_root)  # warm the file cache for both before measuring
        time_list(ROOT)
        floor, ours = [], []
        for _ in range(args.runs):  # interleaved, so machine noise hits both alike
            floor.append(time_list(floor_root))
            ours.append(time_list(ROOT))
    floor_ms = statistics.median(floor) * 1000
    ours_ms = statistics.median(ours) * 1000
    ratio = ours_ms / floor_ms
    verdict = "ok" if ratio <= TARGET_RATIO else "over target"
    print(f"python {sys.version.split()[0]}, {args.runs} runs each, medians:")
    print(f"  bare invoke --list (10 trivial tasks): {floor_ms:7.1f} ms")
    print(f"  manifest inv --list:                   {ours_ms:7.1f} ms")
    print(f"  ratio: {ratio:.2f}x (target <= {TARGET_RATIO}x: {verdict})")
    return 0 if ratio <= TARGET_RATIO else 1


if __name__ == "__main__":
    raise SystemExit(main())
