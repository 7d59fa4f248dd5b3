"""What `inv doctor` says about an ArgoCD Application, from the object alone (no cluster)."""

from __future__ import annotations

import copy
from typing import Any

from ops.argocd import select, summarize

SHA = "4f1c2a9e0b7d6c5a4f3e2d1c0b9a8f7e6d5c4b3a"


def application(**status: Any) -> dict[str, Any]:
    """An Application as the lab's ArgoCD v3.2.11 writes it (fields the doctor reads)."""
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": "manifest-development", "namespace": "argocd"},
        "spec": {
            "project": "manifest-development",
            "destination": {"server": "https://kubernetes.default.svc", "namespace": "development"},
        },
        "status": {
            "sync": {"status": "Synced", "revision": SHA},
            "health": {"status": "Healthy"},
            "resources": [
                {"kind": "Deployment", "name": "manifest-app", "health": {"status": "Healthy"}},
                {"kind": "ConfigMap", "name": "app-config", "status": "Synced"},
            ],
            **status,
        },
    }


def test_synced_and_healthy_is_ok() -> None:
    app = summarize(application())
    assert app.ok
    assert app.describe() == "Application manifest-development: Synced, Healthy at 4f1c2a9"


def test_degraded_names_the_resource_and_fails() -> None:
    degraded = application(health={"status": "Degraded"})
    degraded["status"]["resources"].append(
        {
            "kind": "HorizontalPodAutoscaler",
            "name": "manifest-app",
            "health": {
                "status": "Degraded",
                "message": "the HPA was unable to compute the replica count: failed to get cpu\n"
                "utilization: unable to get metrics",
            },
        }
    )
    app = summarize(degraded)
    assert not app.ok
    assert app.describe() == (
        "Application manifest-development: Synced, Degraded at 4f1c2a9; resource "
        "HorizontalPodAutoscaler/manifest-app Degraded: the HPA was unable to compute the "
        "replica count: failed to get cpu utilization: unable to get metrics"
    )


def test_an_error_condition_or_a_failed_sync_fails_even_when_healthy() -> None:
    refused = application(
        sync={"status": "Unknown"},
        conditions=[
            {
                "type": "InvalidSpecError",
                "message": "application destination server 'https://kubernetes.default.svc' and "
                "namespace 'qa' do not match any of the allowed destinations in project "
                "'manifest-development'",
            },
            {"type": "SharedResourceWarning", "message": "not an error"},
        ],
    )
    app = summarize(refused)
    assert not app.ok
    assert "InvalidSpecError: application destination" in app.describe()
    assert "SharedResourceWarning" not in app.describe()

    failed = application(
        operationState={"phase": "Failed", "message": "one or more objects failed to apply"}
    )
    assert not summarize(failed).ok
    assert "last sync Failed: one or more objects failed to apply" in summarize(failed).describe()


def test_out_of_sync_and_progressing_is_ok_and_said() -> None:
    moving = application(
        sync={"status": "OutOfSync", "revision": SHA}, health={"status": "Progressing"}
    )
    app = summarize(moving)
    assert app.ok
    assert "OutOfSync, Progressing" in app.describe()


def test_a_new_application_has_no_status_yet() -> None:
    new = application()
    del new["status"]
    app = summarize(new)
    assert (app.sync, app.health, app.revision) == ("Unknown", "Unknown", "")
    assert not app.ok


def test_only_applications_deploying_into_the_namespace_of_argocds_cluster() -> None:
    here = application()
    other_namespace = copy.deepcopy(here)
    other_namespace["metadata"]["name"] = "manifest-staging"
    other_namespace["spec"]["destination"]["namespace"] = "staging"
    other_cluster = copy.deepcopy(here)
    other_cluster["metadata"]["name"] = "remote"
    other_cluster["spec"]["destination"]["server"] = "https://remote.example:6443"
    by_name = copy.deepcopy(here)
    by_name["metadata"]["name"] = "a-by-name"
    by_name["spec"]["destination"] = {"name": "in-cluster", "namespace": "development"}

    found = select([here, other_namespace, other_cluster, by_name], "development")

    assert [a.name for a in found] == ["a-by-name", "manifest-development"]
