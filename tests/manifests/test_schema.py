"""Every overlay renders, and every object in it is valid for a pinned Kubernetes version.

The schemas ship inside kubernetes-validate (no download at test time). Strict mode also
rejects fields the API does not know, so a misspelt key fails here, not in the cluster.
"""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest

from tests.manifests.render import EXPECTED, K8S, OVERLAYS, Manifest, render

# The lab cluster runs Kubernetes 1.34 (lab/go/kube); Docker Desktop is at 1.34 too.
KUBERNETES_VERSION = "1.34.0"


def test_every_overlay_folder_is_tested() -> None:
    on_disk = {p.name for p in (K8S / "overlays").iterdir() if p.is_dir()}
    assert on_disk == set(OVERLAYS) == set(EXPECTED)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders(kustomize: Path, overlay: str) -> None:
    manifests = render(kustomize, K8S / "overlays" / overlay)
    kinds = sorted({m["kind"] for m in manifests})
    assert kinds == [
        "ConfigMap",
        "Deployment",
        "HorizontalPodAutoscaler",
        "Ingress",
        "NetworkPolicy",
        "PersistentVolumeClaim",
        "PodDisruptionBudget",
        "Service",
        "StatefulSet",
    ]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_against_the_openapi_schema(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    problems = []
    for manifest in rendered[overlay]:
        label = f"{manifest['kind']}/{manifest['metadata']['name']}"
        try:
            kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = "/".join(str(p) for p in exc.path)
            problems.append(f"{label}: {where}: {exc.message}")
    assert not problems, "\n".join(problems)


def test_the_validator_rejects_a_misspelt_field(rendered: dict[str, list[Manifest]]) -> None:
    """The check above can fail: strict mode catches an unknown key."""
    deployment = next(m for m in rendered["development"] if m["kind"] == "Deployment")
    broken = {**deployment, "spec": {**deployment["spec"], "replicaz": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_argocd_folder_renders(rendered: dict[str, list[Manifest]]) -> None:
    # Applications and AppProjects are custom resources: kubernetes-validate has no schema
    # for them (tests/e2e/test_argocd_e2e.py has ArgoCD's API server check them), so
    # test_policy.py checks the fields ArgoCD acts on.
    assert {m["kind"] for m in rendered["argocd"]} == {"Application", "AppProject"}
