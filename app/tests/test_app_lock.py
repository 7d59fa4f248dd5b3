"""The image's hashed lock files agree with ``app/pyproject.toml`` (no network needed).

``requirements.txt`` locks ``[project].dependencies`` and ``requirements-build.txt`` the
``build`` dependency group (the ``[build-system]`` backend and uv, for the image's build
stage); both are written by

    uv pip compile app/pyproject.toml -o app/requirements.txt \
        --generate-hashes --universal --python-version 3.11
    uv pip compile --group app/pyproject.toml:build -o app/requirements-build.txt \
        --generate-hashes --universal --python-version 3.11

A lock is stale when a declared requirement is missing from it or pinned outside its
specifier, when it still carries a dependency pyproject.toml no longer declares (or a
package nothing in the lock needs any more), or when an entry has no hash.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

APP_DIR = Path(__file__).resolve().parents[1]
ROOT = "student-api"
REGENERATE = (
    "regenerate the locks: uv pip compile app/pyproject.toml -o app/requirements.txt "
    "--generate-hashes --universal --python-version 3.11; uv pip compile --group "
    "app/pyproject.toml:build -o app/requirements-build.txt --generate-hashes --universal "
    "--python-version 3.11"
)


@dataclass
class Pin:
    name: str
    version: Version
    hashes: int = 0
    via: set[str] = field(default_factory=set)


_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")
_VIA = re.compile(r"^\s+#\s+(?:via\s+)?([A-Za-z0-9][A-Za-z0-9._-]*)")


def parse_lock(text: str) -> dict[str, Pin]:
    """The pins of a pip-compile/uv style lock with its ``# via`` annotations."""
    pins: dict[str, Pin] = {}
    current: Pin | None = None
    for line in text.splitlines():
        if match := _PIN.match(line):
            current = Pin(canonicalize_name(match.group(1)), Version(match.group(2)))
            pins[current.name] = current
        elif current is not None and "--hash=sha256:" in line:
            current.hashes += 1
        elif current is not None and (match := _VIA.match(line)):
            current.via.add(canonicalize_name(match.group(1)))
    return pins


def lock_problems(declared: list[str], lock_text: str) -> list[str]:
    """Why the lock does not match ``declared`` (requirement strings); empty if it does."""
    pins = parse_lock(lock_text)
    problems: list[str] = []
    wanted = {canonicalize_name(Requirement(spec).name): Requirement(spec) for spec in declared}
    for name, requirement in wanted.items():
        pin = pins.get(name)
        if pin is None:
            problems.append(f"{requirement} is declared but not in the lock")
        elif not requirement.specifier.contains(pin.version, prereleases=True):
            problems.append(f"{requirement} is declared but the lock pins {pin.version}")
    for pin in pins.values():
        if pin.hashes == 0:
            problems.append(f"{pin.name}=={pin.version} has no hash")
        if ROOT in pin.via and pin.name not in wanted:
            problems.append(f"{pin.name} is locked as a direct dependency but not declared")
        if not pin.via & (set(pins) | {ROOT}):
            problems.append(f"{pin.name} is needed by nothing in the lock")
    return problems


def pyproject() -> dict[str, object]:
    return tomllib.loads((APP_DIR / "pyproject.toml").read_text(encoding="utf-8"))


def runtime_requirements() -> list[str]:
    project = pyproject()["project"]
    assert isinstance(project, dict)
    return list(project["dependencies"])


def build_requirements() -> list[str]:
    groups = pyproject()["dependency-groups"]
    assert isinstance(groups, dict)
    return list(groups["build"])


@pytest.mark.parametrize(
    ("lock", "declared"),
    [("requirements.txt", runtime_requirements), ("requirements-build.txt", build_requirements)],
    ids=["runtime", "build"],
)
def test_lock_matches_pyproject(lock: str, declared: object) -> None:
    assert callable(declared)
    text = (APP_DIR / lock).read_text(encoding="utf-8")

    assert lock_problems(declared(), text) == [], REGENERATE


def test_build_group_holds_the_build_system_backend() -> None:
    build_system = pyproject()["build-system"]
    assert isinstance(build_system, dict)

    assert set(build_system["requires"]) <= set(build_requirements())


LOCK = """\
alembic==1.20.1 \\
    --hash=sha256:aa
    # via student-api (app/pyproject.toml)
mako==1.4.3 \\
    --hash=sha256:bb
    # via alembic
markupsafe==3.0.4 \\
    --hash=sha256:cc
    # via
    #   mako
    #   jinja2
"""


@pytest.mark.parametrize(
    ("declared", "lock", "problem"),
    [
        (["alembic>=1.13"], LOCK, None),
        (["alembic>=1.13", "httpx>=0.27"], LOCK, "httpx>=0.27 is declared but not in the lock"),
        (["alembic>=1.21"], LOCK, "alembic>=1.21 is declared but the lock pins 1.20.1"),
        ([], LOCK, "alembic is locked as a direct dependency but not declared"),
        (["alembic"], LOCK.replace("    --hash=sha256:bb\n", ""), "mako==1.4.3 has no hash"),
        (
            ["alembic"],
            LOCK.replace("#   mako\n", ""),
            "markupsafe is needed by nothing in the lock",
        ),
    ],
    ids=["current", "added", "raised-floor", "removed", "no-hash", "orphan"],
)
def test_stale_locks_are_told_apart(declared: list[str], lock: str, problem: str | None) -> None:
    problems = lock_problems(declared, lock)

    if problem is None:
        assert problems == []
    else:
        assert problem in problems
