"""Fixtures for the manifest tests: the kustomize binary and the rendered overlays."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.manifests.render import INSTALL_HINT, K8S, Manifest, find_kustomize, render
from tests.support.services import missing


@pytest.fixture(scope="session")
def kustomize() -> Path:
    found = find_kustomize()
    if found is None:
        missing(f"kustomize not found; build it once: {INSTALL_HINT}")
    return found


@pytest.fixture(scope="session")
def rendered(kustomize: Path) -> dict[str, list[Manifest]]:
    """Every overlay and the ArgoCD folder, rendered once per session."""
    folders = {p.name: p for p in sorted((K8S / "overlays").iterdir()) if p.is_dir()}
    folders["argocd"] = K8S / "argocd"
    return {name: render(kustomize, folder) for name, folder in folders.items()}
