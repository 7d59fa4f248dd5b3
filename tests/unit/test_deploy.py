"""ops.deploy without a cluster: the plan of a server-side apply from recorded objects."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from ops.deploy import (
    FIELD_MANAGER,
    argocd_application,
    claim_names,
    classify,
    conflict_message,
    diff_paths,
    in_namespace,
    keep_live_fields,
    load_rendered,
    released_volumes,
    set_app_image,
    stale_objects,
    statefulset_status,
)
from ops.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
RECORDED = Path(__file__).parent / "recorded"
APP = "localhost:30002/studenten/manifest-app"
DIGEST = "sha256:" + "ab" * 32


def recorded(name: str) -> Any:
    return json.loads((RECORDED / name).read_text(encoding="utf-8"))


def rendered(overlay: str = "development") -> list[dict[str, Any]]:
    return load_rendered(ROOT / "k8s" / "rendered" / f"{overlay}.yaml")


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


# --- the rendered overlays --------------------------------------------------------------


@pytest.mark.parametrize("overlay", ["development", "staging", "production", "test"])
def test_every_object_moves_into_any_namespace(overlay: str) -> None:
    objects = rendered(overlay)
    moved = in_namespace(objects, "team-a")
    namespaces = {o["metadata"].get("namespace") for o in moved}
    assert namespaces == {"team-a"}
    assert len(moved) == len(objects) >= 10
    assert {o["metadata"]["namespace"] for o in objects} == {
        "development" if overlay == "test" else overlay
    }  # the input is left as it was


def test_an_unknown_overlay_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "development.yaml").write_text("kind: x\n")
    with pytest.raises(ConfigError) as caught:
        load_rendered(tmp_path / "qa.yaml")
    assert "no rendered overlay at" in caught.value.message
    assert "known: development" in caught.value.message


# --- the plan of a server-side apply, from recorded objects -------------------------------


def test_a_missing_object_is_created() -> None:
    desired = recorded("configmap-desired.json")
    assert classify(desired, None, None).action == "create"


def test_an_apply_that_changes_nothing_is_unchanged() -> None:
    desired = recorded("configmap-desired.json")
    live = recorded("configmap-live.json")
    planned = recorded("configmap-dry-run-same.json")  # the server's dry-run answer
    assert planned["metadata"]["managedFields"] != live["metadata"]["managedFields"]
    change = classify(desired, live, planned)
    assert (change.action, change.fields) == ("unchanged", ())


def test_a_changed_object_names_the_changed_fields_only() -> None:
    desired = recorded("configmap-desired.json")
    live = recorded("configmap-live.json")
    planned = recorded("configmap-dry-run-changed.json")
    change = classify(desired, live, planned)
    assert change.action == "change"
    assert change.fields == (".data.database-host",)
    assert "postgres-service" not in repr(change)  # a path, never a value


def test_a_secret_change_never_names_a_value_or_key_content() -> None:
    live = {
        "kind": "Secret",
        "metadata": {"name": "s", "resourceVersion": "1"},
        "data": {"password": "b2xk"},
    }
    planned = copy.deepcopy(live)
    planned["data"]["password"] = "bmV3"
    change = classify({"kind": "Secret", "metadata": {"name": "s"}}, live, planned)
    assert change.fields == (".data",)


def test_a_conflict_is_reported_with_its_fields_and_managers() -> None:
    body = json.dumps(recorded("apply-conflict-409.json"))
    message = conflict_message(body)
    assert '.spec.replicas (conflict with "kubectl-scale"' in message
    change = classify(recorded("configmap-desired.json"), {}, None, message)
    assert change.action == "conflict" and "kubectl-scale" in change.detail


def test_status_and_bookkeeping_are_no_change() -> None:
    live = {"metadata": {"name": "a", "generation": 3, "uid": "u"}, "status": {"x": 1}}
    planned = {"metadata": {"name": "a", "generation": 4, "uid": "u"}, "status": {"x": 2}}
    assert diff_paths(live, planned) == []


# --- fields others own ------------------------------------------------------------------


def test_the_pipelines_digest_and_the_hpas_replicas_are_kept() -> None:
    desired = find(rendered(), "Deployment", "manifest-app")
    live = copy.deepcopy(desired)
    live["spec"]["replicas"] = 4
    live["spec"]["template"]["spec"]["containers"][0]["image"] = f"{APP}@{DIGEST}"

    kept = keep_live_fields(desired, live, image_repository="studenten/manifest-app", scaled=True)

    assert kept["spec"]["replicas"] == 4
    assert kept["spec"]["template"]["spec"]["containers"][0]["image"] == f"{APP}@{DIGEST}"
    assert desired["spec"]["template"]["spec"]["containers"][0]["image"] == f"{APP}:latest"


def test_another_repositorys_image_is_not_kept() -> None:
    desired = find(rendered(), "Deployment", "manifest-app")
    live = copy.deepcopy(desired)
    live["spec"]["template"]["spec"]["containers"][0]["image"] = f"evil.example/x@{DIGEST}"
    kept = keep_live_fields(desired, live, image_repository="studenten/manifest-app", scaled=False)
    assert kept["spec"]["template"]["spec"]["containers"][0]["image"] == f"{APP}:latest"
    assert kept["spec"]["replicas"] == desired["spec"]["replicas"]


# --- ArgoCD, pruning, waiting -------------------------------------------------------------


def test_argocd_tracking_is_seen() -> None:
    live = recorded("configmap-live.json")
    assert argocd_application([live]) is None
    tracked = copy.deepcopy(live)
    tracked["metadata"]["annotations"] = {
        "argocd.argoproj.io/tracking-id": "manifest-development:/ConfigMap:development/app-config"
    }
    assert argocd_application([live, tracked]) == "manifest-development"


def test_prune_takes_only_our_objects_that_left_and_never_a_pvc() -> None:
    ours = [{"manager": FIELD_MANAGER, "operation": "Apply"}]
    labels = {"app.kubernetes.io/part-of": "manifest"}

    def obj(kind: str, name: str, managed: list[dict[str, str]]) -> dict[str, Any]:
        return {
            "kind": kind,
            "metadata": {"name": name, "labels": labels, "managedFields": managed},
        }

    desired = [obj("ConfigMap", "postgres-backup-script-new", ours)]
    live = [
        obj("ConfigMap", "postgres-backup-script-new", ours),
        obj("ConfigMap", "postgres-backup-script-old", ours),
        obj("ConfigMap", "someone-elses", [{"manager": "kubectl", "operation": "Apply"}]),
        obj("PersistentVolumeClaim", "postgres-backup-pvc", ours),
    ]
    assert [o["metadata"]["name"] for o in stale_objects(live, desired)] == [
        "postgres-backup-script-old"
    ]


@pytest.mark.parametrize(
    ("status", "done"),
    [
        pytest.param({"observedGeneration": 1}, False, id="no-pod-yet"),
        pytest.param(
            {
                "observedGeneration": 1,
                "readyReplicas": 1,
                "updatedReplicas": 1,
                "currentRevision": "a",
                "updateRevision": "a",
            },
            True,
            id="ready",
        ),
        pytest.param(
            {"observedGeneration": 0, "readyReplicas": 1, "updatedReplicas": 1},
            False,
            id="not-observed",
        ),
    ],
)
def test_statefulset_readiness(status: dict[str, Any], done: bool) -> None:
    sts = {"metadata": {"name": "postgres", "generation": 1}, "spec": {"replicas": 1}}
    assert statefulset_status({**sts, "status": status}).done is done


def test_our_claims_and_their_released_volumes() -> None:
    claims = claim_names(in_namespace(rendered("test"), "team-a"))
    assert sorted(claims) == ["postgres-backup-pvc", "postgres-data-postgres-0"]

    def pv(name: str, phase: str, namespace: str, claim: str) -> dict[str, Any]:
        return {
            "metadata": {"name": name},
            "spec": {"claimRef": {"namespace": namespace, "name": claim, "uid": "old"}},
            "status": {"phase": phase},
        }

    volumes = [
        pv("pvc-1", "Released", "team-a", "postgres-data-postgres-0"),
        pv("pvc-2", "Bound", "team-a", "postgres-backup-pvc"),
        pv("pvc-3", "Released", "team-b", "postgres-data-postgres-0"),
        pv("pvc-4", "Released", "team-a", "someone-elses"),
    ]
    assert released_volumes(volumes, "team-a", claims) == ["pvc-1"]


def test_the_pipelines_digest_replaces_the_overlays_image() -> None:
    app = find(rendered(), "Deployment", "manifest-app")
    changed = set_app_image(app, f"localhost:30002/e2e/other@{DIGEST}")
    assert changed["spec"]["template"]["spec"]["containers"][0]["image"].endswith(DIGEST)
    assert app["spec"]["template"]["spec"]["containers"][0]["image"] == f"{APP}:latest"
