"""The one way the tests run ``inv``: as a user does, in a new process.

A test names what its task should see (``clean_env``) and where it runs (``cwd``); the
runner is the same everywhere: this repository's ``tasks.py``, text output captured, stdin
closed unless the test types something, and no exception for a non-zero exit (the tests
assert on it).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def clean_env(*, without: tuple[str, ...] = (), **environ: str) -> dict[str, str]:
    """This process's environment without any ``MANIFEST_*`` setting (the machine's own
    configuration must not leak into a test) nor names starting with ``without``, plus
    ``environ``."""
    drop = ("MANIFEST_", *without)
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(environ)
    return env


def run_inv(
    *args: str,
    cwd: Path = ROOT,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """``inv ARGS`` in ``cwd`` with ``env`` (None: this process's own environment)."""
    return subprocess.run(
        [sys.executable, "-m", "invoke", "--search-root", str(ROOT), *args],
        cwd=cwd,
        env=dict(env) if env is not None else None,
        input=input,
        stdin=subprocess.DEVNULL if input is None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
