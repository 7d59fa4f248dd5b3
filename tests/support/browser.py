"""Headless Chromium (Debian's `chromium`) with no internet, for pages that must render offline.

Chromium gets no route out: every host but 127.0.0.1 (and the hosts a caller maps to it)
resolves to nothing and any other request goes to a dead proxy, so a page that needs a CDN
renders blank. Screenshots go to ``$MANIFEST_TEST_ARTIFACTS`` (default ``test-artifacts/`` in
the repository). ``MANIFEST_TEST_CHROMIUM`` names another binary than ``chromium``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from tests.support.services import require

REPO = Path(__file__).resolve().parents[2]
# What Swagger UI lists for the student API, and how to find it in the rendered DOM.
STUDENT_OPERATIONS = {
    ("GET", "/api/student"),
    ("POST", "/api/student"),
    ("GET", "/api/student/{student_id}"),
    ("PUT", "/api/student/{student_id}"),
    ("DELETE", "/api/student/{student_id}"),
}
_OPERATION = re.compile(r'opblock-summary-method">(\w+)</span>.*?data-path="([^"]*)"', re.DOTALL)


def listed_operations(dom: str) -> set[tuple[str, str]]:
    """(method, path) of every operation Swagger UI rendered."""
    return set(_OPERATION.findall(dom))


def artifacts_dir() -> Path:
    folder = Path(os.environ.get("MANIFEST_TEST_ARTIFACTS", REPO / "test-artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def find_chromium() -> str:
    """The browser binary; skipped on a laptop without it, failing under CI=true."""
    name = os.environ.get("MANIFEST_TEST_CHROMIUM", "chromium")
    browser = shutil.which(name)
    require(browser is not None, f"{name} not found (apt-get install chromium)")
    assert browser is not None
    return browser


def offline_chromium(
    browser: str, url: str, screenshot: Path, *, local_hosts: Sequence[str] = ()
) -> str:
    """The DOM of ``url`` after its scripts ran, in headless Chromium without internet.
    ``local_hosts`` resolve to 127.0.0.1 and bypass the dead proxy (an Ingress's host)."""
    rules = [f"MAP {host} 127.0.0.1" for host in local_hosts]
    rules.append("MAP * ~NOTFOUND , EXCLUDE 127.0.0.1")
    # Loopback addresses bypass the proxy by Chromium's own rules; mapped hosts need saying.
    bypass = [f"--proxy-bypass-list={';'.join(local_hosts)}"] if local_hosts else []
    result = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",  # tests run as root in CI
            "--disable-gpu",
            "--no-first-run",
            f"--host-resolver-rules={' , '.join(rules)}",
            "--proxy-server=http://127.0.0.1:9",
            *bypass,
            # Let the page fetch the OpenAPI document and render before the DOM is taken.
            "--virtual-time-budget=15000",
            "--window-size=1280,1600",
            f"--screenshot={screenshot}",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout
