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


def test_a_client_is_closed_when_its_block_ends_or_fails(tmp_path: Path, monkeypatch) -> None:
    from kubernetes.client import ApiClient

    from ops import kube

    closed: list[object] = []
    monkeypatch.setattr(ApiClient, "close", lambda self: closed.append(self))
    settings = load_settings(
        {"kubeconfig": str(kubeconfig(tmp_path, "docker-desktop"))}, environ={}
    )
    target = resolve_target(settings)
    with kube.client(target) as api:
        assert api.configuration.host == "https://127.0.0.1:1"
    assert closed == [api]
    with pytest.raises(RuntimeError), kube.client(target) as failing:
        raise RuntimeError("the operation failed")
    assert closed == [api, failing]


def test_every_api_client_in_ops_is_opened_by_a_with_block() -> None:
    """Seen: clients outside the exec layer were never closed (issue 13). Every ApiClient
    comes from ``kube.client`` (or PodExec's factory of it), each call the head of a
    ``with``: so each one is closed."""
    import ast

    ops_dir = Path(__file__).resolve().parents[2] / "ops"
    opened: list[str] = []
    unclosed: list[str] = []
    for path in sorted(ops_dir.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        heads = {
            id(item.context_expr)
            for node in ast.walk(tree)
            if isinstance(node, ast.With)
            for item in node.items
        }
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            made_here = path.name == "kube.py" and name == "_new_client"  # in kube.client
            if name in ("ApiClient", "api_client", "_new_client") and not made_here:
                unclosed.append(f"{path.name}:{node.lineno} {name}(...)")
            if name in ("kube.client", "client", "self._client_factory"):
                opened.append(f"{path.name}:{node.lineno}")
                if id(node) not in heads:
                    unclosed.append(f"{path.name}:{node.lineno} {name}(...) outside a with")
    assert unclosed == []
    assert len(opened) >= 10, opened  # the callers are found at all
