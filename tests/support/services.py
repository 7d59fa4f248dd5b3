"""Skip on a laptop, fail under CI: a test that needs a service it cannot find."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def require(available: bool, reason: str) -> None:
    """Continue if ``available``; otherwise skip (developer laptop) or fail (CI=true)."""
    if not available:
        missing(reason)


def missing(reason: str) -> NoReturn:
    if in_ci():
        pytest.fail(f"{reason} (CI=true: every service must be running)", pytrace=False)
    pytest.skip(reason)
