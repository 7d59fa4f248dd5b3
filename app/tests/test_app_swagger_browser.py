"""Swagger UI in a real browser with no internet: Debian's headless Chromium opens
``/swagger`` on a locally started app and the UI lists the student operations.

The browser has no route out (tests/support/browser.py), so a page that needs a CDN renders
blank (as the app's page did while it loaded Swagger UI from one). The screenshot is kept in
``$MANIFEST_TEST_ARTIFACTS`` (default ``test-artifacts/`` in the repository); the same page
through the lab's ingress controller is tests/e2e/test_traffic_e2e.py's.

Needs ``chromium`` (``apt-get install chromium``; lab/labkit/packages.py installs it for
CI; ``MANIFEST_TEST_CHROMIUM`` names another binary): skipped without it on a laptop,
failing under CI=true.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from app_helpers import AppProcess, db_env

from tests.support.browser import (
    STUDENT_OPERATIONS,
    artifacts_dir,
    find_chromium,
    listed_operations,
    offline_chromium,
)
from tests.support.postgres import PostgresServer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def chromium() -> str:
    return find_chromium()


def test_swagger_ui_lists_the_student_operations_offline(
    chromium: str,
    start_app: Callable[..., AppProcess],
    postgres_server: PostgresServer,
    fresh_database: str,
) -> None:
    app = start_app(db_env(postgres_server, fresh_database))
    app.wait_for("/health/startup")
    screenshot = artifacts_dir() / "swagger-ui.png"
    screenshot.unlink(missing_ok=True)

    dom = offline_chromium(chromium, app.base_url + "/swagger", screenshot)

    listed = listed_operations(dom)
    assert listed >= STUDENT_OPERATIONS, f"UI lists {sorted(listed)}; screenshot {screenshot}"
    assert 'id="operations-tag-students"' in dom
    assert screenshot.stat().st_size > 10_000
