"""lab.py as a command line (the lab's own driver; no service needed for `status`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

LAB = Path(__file__).resolve().parents[2] / "lab" / "lab.py"


def test_status_piped_into_a_reader_that_stops_early_is_no_error(tmp_path):
    """Seen: `lab.py status | head -1` ended in a BrokenPipeError traceback, exit 1."""
    env = {"MANIFEST_LAB_DIR": str(tmp_path / "lab"), "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen(
        [sys.executable, str(LAB), "status"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # as `head -1` does once it has its line
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0, stderr
    assert first.startswith(b"[lab]") and "Traceback" not in stderr
