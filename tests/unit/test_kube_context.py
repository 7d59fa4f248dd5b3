"""Choosing the kube context: known contexts only, and an allow-list unless named with a flag."""

from __future__ import annotations

from pathlib import Path

import pytest

from ops.config import load_settings
from ops.errors import ContextError
from ops.kube import resolve_target

KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://127.0.0.1:1"}
users:
- name: u
  user: {token: "t"}
contexts:
- name: docker-desktop
  context: {cluster: c, user: u}
- name: prod-eu
  context: {cluster: c, user: u}
current-context: %s
"""


def kubeconfig(tmp_path: Path, current: str) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG % current)
    return path


def test_current_context_on_the_allow_list_is_used(tmp_path: Path) -> None:
    settings = load_settings(
        {"kubeconfig": str(kubeconfig(tmp_path, "docker-desktop"))}, environ={}
    )
    target = resolve_target(settings)
    assert (target.context, target.namespace) == ("docker-desktop", "development")


def test_current_context_off_the_allow_list_is_refused(tmp_path: Path) -> None:
    settings = load_settings({"kubeconfig": str(kubeconfig(tmp_path, "prod-eu"))}, environ={})
    with pytest.raises(ContextError, match="not on the allow-list") as caught:
        resolve_target(settings)
    assert "--context prod-eu" in caught.value.hint


def test_context_named_with_the_flag_is_allowed(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path, "docker-desktop")
    settings = load_settings({"kubeconfig": str(path), "context": "prod-eu"}, environ={})
    assert resolve_target(settings).context == "prod-eu"


def test_context_from_the_environment_still_needs_the_allow_list(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path, "docker-desktop")
    settings = load_settings({"kubeconfig": str(path)}, environ={"MANIFEST_CONTEXT": "prod-eu"})
    with pytest.raises(ContextError, match="allow-list"):
        resolve_target(settings)


def test_unknown_context_lists_the_known_ones(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path, "docker-desktop")
    settings = load_settings({"kubeconfig": str(path), "context": "typo"}, environ={})
    with pytest.raises(ContextError, match=r"not in the kubeconfig.*docker-desktop, prod-eu"):
        resolve_target(settings)


def test_missing_kubeconfig_is_one_clear_error(tmp_path: Path) -> None:
    settings = load_settings({"kubeconfig": str(tmp_path / "absent")}, environ={})
    with pytest.raises(ContextError, match="no usable kubeconfig"):
        resolve_target(settings)
