"""Render the Kustomize overlays with a pinned kustomize binary.

kustomize is not a Python package: build it once from the Go module proxy into a cache
folder (CI does this before the tests)::

    GOBIN=~/.cache/manifest/bin go install sigs.k8s.io/kustomize/kustomize/v5@v5.7.1

``MANIFEST_KUSTOMIZE`` names another binary; ``kustomize`` on PATH is the last resort.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
KUSTOMIZE_VERSION = "v5.7.1"
CACHED_KUSTOMIZE = Path.home() / ".cache" / "manifest" / "bin" / "kustomize"
INSTALL_HINT = (
    f"GOBIN={CACHED_KUSTOMIZE.parent} go install "
    f"sigs.k8s.io/kustomize/kustomize/v5@{KUSTOMIZE_VERSION}"
)
OVERLAYS = ("development", "staging", "production", "test")
# What each overlay must say; the test overlay is development on the lab cluster.
EXPECTED = {
    "development": {"namespace": "development", "replicas": 2, "host": "localhost"},
    "staging": {"namespace": "staging", "replicas": 3, "host": "staging.example.com"},
    "production": {"namespace": "production", "replicas": 5, "host": "api.example.com"},
    "test": {"namespace": "development", "replicas": 2, "host": "localhost"},
}

Manifest = dict[str, Any]


def find_kustomize() -> Path | None:
    named = os.environ.get("MANIFEST_KUSTOMIZE")
    if named:
        return Path(named)
    if CACHED_KUSTOMIZE.is_file():
        return CACHED_KUSTOMIZE
    found = shutil.which("kustomize")
    return Path(found) if found else None


def render(kustomize: Path, folder: Path) -> list[Manifest]:
    """``kustomize build folder``, parsed into one dict per object."""
    result = subprocess.run(
        [str(kustomize), "build", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"kustomize build {folder} failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


RENDERED = K8S / "rendered"


def rendered_text(kustomize: Path, overlay: str) -> str:
    """What ``k8s/rendered/<overlay>.yaml`` must hold: a header, then kustomize's output."""
    result = subprocess.run(
        [str(kustomize), "build", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"kustomize build {overlay} failed:\n{result.stderr}")
    return (
        f"# Rendered from k8s/overlays/{overlay} by kustomize {KUSTOMIZE_VERSION}: do not edit.\n"
        "# `inv deploy` applies this file. After changing k8s/, render again:\n"
        "#   python -m tests.manifests.render\n" + result.stdout
    )


def write_rendered(kustomize: Path) -> list[Path]:
    """Render every overlay into k8s/rendered/ (what `inv deploy` applies)."""
    RENDERED.mkdir(exist_ok=True)
    written = []
    for overlay in OVERLAYS:
        path = RENDERED / f"{overlay}.yaml"
        path.write_text(rendered_text(kustomize, overlay), encoding="utf-8")
        written.append(path)
    return written


def in_namespace(manifests: list[Manifest], namespace: str) -> list[Manifest]:
    """The same objects, moved to another namespace (for one test's own namespace)."""
    moved = []
    for manifest in manifests:
        copy = {**manifest, "metadata": {**manifest["metadata"]}}
        if "namespace" in copy["metadata"]:
            copy["metadata"]["namespace"] = namespace
        moved.append(copy)
    return moved


def find(manifests: list[Manifest], kind: str, name: str) -> Manifest:
    """The object of that kind named ``name``, or ``name-<hash>`` for generated ConfigMaps."""
    generated = re.compile(re.escape(name) + r"-[a-z0-9]{10}")
    for manifest in manifests:
        actual = manifest["metadata"]["name"]
        if manifest["kind"] == kind and (actual == name or generated.fullmatch(actual)):
            return manifest
    raise AssertionError(f"no {kind} {name!r} in the rendered manifests")


if __name__ == "__main__":
    found = find_kustomize()
    if found is None:
        raise SystemExit(f"kustomize not found; build it once: {INSTALL_HINT}")
    for written in write_rendered(found):
        print(f"wrote {written.relative_to(ROOT)}")
