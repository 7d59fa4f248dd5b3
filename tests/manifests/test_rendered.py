"""k8s/rendered/ is what `inv deploy` applies: it must be exactly what the pinned kustomize
renders from k8s/overlays/ now (CI fails when someone changes k8s/ and forgets to render)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.manifests.render import OVERLAYS, RENDERED, rendered_text


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_rendered_overlay_is_current(kustomize: Path, overlay: str) -> None:
    kept = (RENDERED / f"{overlay}.yaml").read_text(encoding="utf-8")
    assert kept == rendered_text(kustomize, overlay), (
        f"k8s/rendered/{overlay}.yaml is stale: run `python -m tests.manifests.render`"
    )


def test_every_rendered_file_has_an_overlay() -> None:
    assert sorted(p.stem for p in RENDERED.glob("*.yaml")) == sorted(OVERLAYS)
