"""Skip on a laptop, fail under CI: a test that needs a service it cannot find."""

from __future__ import annotations

import os
from pathlib import Path
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


def host_ca_bundle() -> Path | None:
    """The host's CA bundle, for pip inside an image build (PyPI may sit behind a TLS proxy
    that only the host trusts)."""
    for name in ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
        value = os.environ.get(name)
        if value and Path(value).is_file():
            return Path(value)
    default = Path("/etc/ssl/certs/ca-certificates.crt")
    return default if default.is_file() else None
