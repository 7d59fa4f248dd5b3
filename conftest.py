"""Shared pytest fixtures for the suite's tests and the app's tests."""

from __future__ import annotations

import pytest

pytest_plugins = ["tests.support.postgres"]

CLUSTER_RESET = "cluster_reset"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--cluster-reset",
        action="store_true",
        help="run only the tests marked cluster_reset: they tear the lab cluster down "
        "(etcd and volumes wiped) and bring it up again; hold the lab's exclusive lock",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without --cluster-reset the cluster_reset tests are deselected (whatever -m says: they
    must never run by accident beside others on the shared lab); with it, only they run."""
    wanted = bool(config.getoption("--cluster-reset"))
    keep = [
        item for item in items if (item.get_closest_marker(CLUSTER_RESET) is not None) == wanted
    ]
    dropped = [item for item in items if item not in keep]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep
