"""Rollout-status logic on recorded Deployment objects (as `kubectl get deploy -o json` shows)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from ops.errors import RolloutFailed
from ops.rollout import (
    FAIL_FAST_HINTS,
    RESTARTED_AT,
    RETRY_GRACE_SECONDS,
    PodProblem,
    ProblemJudge,
    RolloutStatus,
    app_container,
    current_replica_set,
    evaluate,
    image_name,
    image_patch,
    own_events,
    pod_problems,
    restart_patch,
    restarted_at,
    wait_until,
)

IMAGE = "localhost:30002/studenten/manifest-app:latest"


def recorded(
    *,
    generation: int = 3,
    replicas: int = 2,
    paused: bool = False,
    status: dict[str, Any],
) -> dict[str, Any]:
    """A Deployment as the API returned it during a 2-replica RollingUpdate restart."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "manifest-app",
            "namespace": "development",
            "generation": generation,
            "annotations": {"deployment.kubernetes.io/revision": "3"},
        },
        "spec": {
            "replicas": replicas,
            "paused": paused,
            "selector": {"matchLabels": {"app": "manifest-app"}},
            "template": {
                "metadata": {"labels": {"app": "manifest-app"}},
                "spec": {"containers": [{"name": "app", "image": IMAGE}]},
            },
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
        },
        "status": status,
    }


PROGRESSING_CONDITION = {
    "type": "Progressing",
    "status": "True",
    "reason": "ReplicaSetUpdated",
    "message": 'ReplicaSet "manifest-app-7d9c8" is progressing.',
}
COMPLETE_CONDITION = {
    "type": "Progressing",
    "status": "True",
    "reason": "NewReplicaSetAvailable",
    "message": 'ReplicaSet "manifest-app-7d9c8" has successfully progressed.',
}
STALLED_CONDITION = {
    "type": "Progressing",
    "status": "False",
    "reason": "ProgressDeadlineExceeded",
    "message": 'ReplicaSet "manifest-app-7d9c8" has timed out progressing.',
}
AVAILABLE = {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}

CASES = {
    "just-patched-not-observed": (
        recorded(
            status={
                "observedGeneration": 2,
                "replicas": 2,
                "updatedReplicas": 2,
                "readyReplicas": 2,
                "availableReplicas": 2,
                "conditions": [AVAILABLE, COMPLETE_CONDITION],
            }
        ),
        "observing",
    ),
    "surge-pod-starting": (
        recorded(
            status={
                "observedGeneration": 3,
                "replicas": 3,
                "updatedReplicas": 1,
                "readyReplicas": 2,
                "availableReplicas": 2,
                "unavailableReplicas": 1,
                "conditions": [AVAILABLE, PROGRESSING_CONDITION],
            }
        ),
        "progressing",
    ),
    "all-updated-old-terminating": (
        recorded(
            status={
                "observedGeneration": 3,
                "replicas": 3,
                "updatedReplicas": 2,
                "readyReplicas": 3,
                "availableReplicas": 3,
                "conditions": [AVAILABLE, PROGRESSING_CONDITION],
            }
        ),
        "progressing",
    ),
    "updated-not-yet-available": (
        recorded(
            status={
                "observedGeneration": 3,
                "replicas": 2,
                "updatedReplicas": 2,
                "readyReplicas": 1,
                "availableReplicas": 1,
                "unavailableReplicas": 1,
                "conditions": [AVAILABLE, PROGRESSING_CONDITION],
            }
        ),
        "progressing",
    ),
    "complete": (
        recorded(
            status={
                "observedGeneration": 3,
                "replicas": 2,
                "updatedReplicas": 2,
                "readyReplicas": 2,
                "availableReplicas": 2,
                "conditions": [AVAILABLE, COMPLETE_CONDITION],
            }
        ),
        "complete",
    ),
    "stalled-progress-deadline": (
        recorded(
            status={
                "observedGeneration": 3,
                "replicas": 3,
                "updatedReplicas": 1,
                "readyReplicas": 2,
                "availableReplicas": 2,
                "unavailableReplicas": 1,
                "conditions": [AVAILABLE, STALLED_CONDITION],
            }
        ),
        "stalled",
    ),
    "paused-mid-rollout": (
        recorded(
            paused=True,
            status={
                "observedGeneration": 3,
                "replicas": 3,
                "updatedReplicas": 1,
                "readyReplicas": 3,
                "availableReplicas": 3,
                "conditions": [
                    AVAILABLE,
                    {"type": "Progressing", "status": "Unknown", "reason": "DeploymentPaused"},
                ],
            },
        ),
        "paused",
    ),
    "scaled-to-zero": (
        recorded(replicas=0, status={"observedGeneration": 3}),
        "complete",
    ),
}


@pytest.mark.parametrize(("deployment", "phase"), list(CASES.values()), ids=list(CASES))
def test_phase_of_recorded_deployment(deployment: dict[str, Any], phase: str) -> None:
    status = evaluate(deployment)
    assert status.phase == phase
    assert status.name == "manifest-app"
    assert status.done is (phase == "complete")


def test_counts_are_read_from_status() -> None:
    status = evaluate(CASES["surge-pod-starting"][0])
    assert (status.desired, status.updated, status.ready, status.available) == (2, 1, 2, 2)
    assert status.unavailable == 1
    assert status.progress == "1/2 updated, 2 ready, 2 available, 2 old"
    assert "1 of 2 new replicas updated" in status.message


def test_client_object_gives_the_same_answer_as_the_dict() -> None:
    from kubernetes.client import ApiClient

    deployment = CASES["updated-not-yet-available"][0]
    # The client's own deserializer turns the recorded JSON into its V1Deployment object.
    obj = ApiClient()._ApiClient__deserialize(deployment, "V1Deployment")
    assert type(obj).__name__ == "V1Deployment"
    assert evaluate(obj) == evaluate(deployment)
    assert evaluate(obj.to_dict()) == evaluate(deployment)


def test_missing_status_is_observing_not_complete() -> None:
    deployment = recorded(status={})
    deployment["status"] = None
    assert evaluate(deployment).phase == "observing"


def test_restart_patch_matches_kubectl() -> None:
    from datetime import UTC, datetime

    when = restarted_at(datetime(2026, 11, 26, 7, 5, 9, tzinfo=UTC))
    assert when == "2026-11-26T07:05:09Z"
    assert restart_patch(when) == {
        "spec": {
            "template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": when}}}
        }
    }


class FakeClock:
    """A clock the test advances; stands in for time so the wait loop runs instantly."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def statuses(*names: str) -> list[RolloutStatus]:
    return [evaluate(copy.deepcopy(CASES[name][0])) for name in names]


def test_wait_returns_when_complete_and_reports_each_change() -> None:
    sequence = iter(
        statuses(
            "just-patched-not-observed",
            "surge-pod-starting",
            "surge-pod-starting",
            "all-updated-old-terminating",
            "complete",
        )
    )
    clock = FakeClock()
    seen: list[str] = []
    final = wait_until(
        lambda: next(sequence),
        timeout=60,
        clock=clock,
        sleep=clock.sleep,
        on_progress=lambda s: seen.append(s.phase),
    )
    assert final.done
    assert seen == ["observing", "progressing", "progressing", "complete"]  # duplicate skipped
    assert clock.now == 4.0


def test_wait_times_out_with_the_last_status() -> None:
    clock = FakeClock()
    stuck = statuses("updated-not-yet-available")[0]
    final = wait_until(lambda: stuck, timeout=10, poll_seconds=3, clock=clock, sleep=clock.sleep)
    assert final.phase == "progressing"
    assert not final.done
    assert clock.now == 10.0


def test_wait_stops_at_once_on_a_stalled_rollout() -> None:
    clock = FakeClock()
    final = wait_until(
        lambda: statuses("stalled-progress-deadline")[0],
        timeout=600,
        clock=clock,
        sleep=clock.sleep,
    )
    assert final.phase == "stalled"
    assert clock.now == 0.0


RECORDED_PODS = [
    {
        "metadata": {"name": "manifest-app-7d9c8-abcde"},
        "status": {
            "phase": "Pending",
            "containerStatuses": [
                {
                    "name": "app",
                    "ready": False,
                    "state": {
                        "waiting": {
                            "reason": "ImagePullBackOff",
                            "message": 'Back-off pulling image "localhost:30002/x:nope"',
                        }
                    },
                }
            ],
        },
    },
    {
        "metadata": {"name": "manifest-app-7d9c8-fghij"},
        "status": {
            "phase": "Pending",
            "containerStatuses": [
                {"name": "app", "state": {"waiting": {"reason": "ContainerCreating"}}}
            ],
        },
    },
    {
        "metadata": {"name": "manifest-app-7d9c8-klmno"},
        "status": {
            "phase": "Running",
            "containerStatuses": [
                {
                    "name": "app",
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s"}},
                }
            ],
        },
    },
]


def test_a_container_that_exited_non_zero_is_a_problem() -> None:
    pod = {
        "metadata": {"name": "manifest-app-7d9c8-pqrst"},
        "status": {
            "containerStatuses": [
                {
                    "name": "app",
                    "restartCount": 1,
                    "state": {"terminated": {"exitCode": 1, "reason": "Error"}},
                }
            ]
        },
    }
    assert [str(p) for p in pod_problems([pod])] == [
        "pod manifest-app-7d9c8-pqrst container app: Error: exit code 1"
    ]


def test_pod_problems_name_the_waiting_reasons() -> None:
    problems = pod_problems(RECORDED_PODS)
    assert [(p.pod, p.reason) for p in problems] == [
        ("manifest-app-7d9c8-abcde", "ImagePullBackOff"),
        ("manifest-app-7d9c8-klmno", "CrashLoopBackOff"),
    ]
    assert "Back-off pulling image" in str(problems[0])


# --- failing fast, on this rollout's own pods and events -----------------------------------

UID = "5f1c2d7e-0000-4000-8000-000000000001"


def replica_set(name: str, revision: str, *, owner: str = UID) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "annotations": {"deployment.kubernetes.io/revision": revision},
            "labels": {"pod-template-hash": name.rsplit("-", 1)[1]},
            "ownerReferences": [{"kind": "Deployment", "name": "manifest-app", "uid": owner}],
        }
    }


def observed_deployment(*, revision: str, generation: int = 4, observed: int = 4) -> dict[str, Any]:
    deployment = recorded(generation=generation, status={"observedGeneration": observed})
    deployment["metadata"]["uid"] = UID
    deployment["metadata"]["annotations"] = {"deployment.kubernetes.io/revision": revision}
    return deployment


def test_the_current_replica_set_is_the_one_of_the_deployments_revision() -> None:
    sets = [
        replica_set("manifest-app-old11", "3"),
        replica_set("manifest-app-new22", "4"),
        replica_set("other-app-zzz99", "9", owner="someone-else"),
    ]
    chosen = current_replica_set(observed_deployment(revision="4"), sets)
    assert chosen is not None and chosen["metadata"]["name"] == "manifest-app-new22"


def test_no_replica_set_is_current_before_the_controller_saw_the_change() -> None:
    """Right after the patch, the newest ReplicaSet is still the old one: its crash-looping
    pods are not this rollout's."""
    sets = [replica_set("manifest-app-old11", "3")]
    assert current_replica_set(observed_deployment(revision="3", observed=3), sets) is None
    assert current_replica_set(observed_deployment(revision="4"), sets) is None


def problem(reason: str, restarts: int = 0) -> PodProblem:
    return PodProblem(
        pod="manifest-app-new22-abcde",
        container="app",
        reason=reason,
        message="",
        restarts=restarts,
    )


@pytest.mark.parametrize(
    ("reason", "restarts", "fatal"),
    [
        ("CrashLoopBackOff", 0, False),
        ("CrashLoopBackOff", 1, True),
        ("ImagePullBackOff", 0, True),
        ("ErrImagePull", 0, True),
        ("CreateContainerConfigError", 0, True),
        ("InvalidImageName", 0, True),
        ("Error", 1, False),
        ("Unschedulable", 0, False),
    ],
    ids=lambda v: str(v),
)
def test_which_problems_fail_the_rollout_at_once(reason: str, restarts: int, fatal: bool) -> None:
    assert problem(reason, restarts).fatal is fatal


def test_each_fatal_reason_has_its_own_hint() -> None:
    hints = {reason: problem(reason, 1).hint for reason in FAIL_FAST_HINTS}
    assert "log lines" in hints["CrashLoopBackOff"]
    assert "pull" in hints["ImagePullBackOff"] and "harbor-regcred" in hints["ErrImagePull"]
    assert "Secret or ConfigMap" in hints["CreateContainerConfigError"]
    assert not any("Raise --timeout" in h for h in hints.values())


def test_the_first_fatal_problem_is_chosen_from_recorded_pods() -> None:
    pods = copy.deepcopy(RECORDED_PODS)
    pods[2]["status"]["containerStatuses"][0]["restartCount"] = 2
    problems = pod_problems(pods)
    assert [p.restarts for p in problems] == [0, 2]
    clock = FakeClock()
    judge = ProblemJudge(clock=clock)
    found = judge.first_fatal(problems)  # the pull is retried by the kubelet: the crash loop
    assert found is not None and found.reason == "CrashLoopBackOff"
    clock.sleep(RETRY_GRACE_SECONDS)
    found = judge.first_fatal(problems)  # the pull outlasted the retry: first in order
    assert found is not None and found.reason == "ImagePullBackOff"
    assert judge.first_fatal([problem("CrashLoopBackOff", 0), problem("Error", 1)]) is None


# Seen in CI on the lab: the first pull of a new namespace's pod was made before the node
# authorizer linked the pod to its pull secret (kubelet: "Unable to retrieve pull secret ...
# failed to sync secret cache"), so it went out without credentials and got 401; the
# kubelet's retry 3 s later pulled the image. The rollout had failed at the first poll.
UNAUTHORIZED_PULL = (
    'failed to pull and unpack image "localhost:30002/e2e/rollout-bb0e89bb:latest": failed to '
    'resolve reference "localhost:30002/e2e/rollout-bb0e89bb:latest": pulling from host '
    "localhost:30002 failed with status code [manifests latest]: 401 Unauthorized"
)


def waiting(reason: str, message: str = "") -> PodProblem:
    return PodProblem(
        pod="e2e-app-65d4f98585-ftz46", container="app", reason=reason, message=message
    )


def test_a_pull_refused_once_then_retried_by_the_kubelet_does_not_fail_the_rollout() -> None:
    clock = FakeClock()
    judge = ProblemJudge(clock=clock)
    polls = [
        [waiting("ErrImagePull", UNAUTHORIZED_PULL)],
        [waiting("ImagePullBackOff", 'Back-off pulling image "localhost:30002/e2e/rollout"')],
        [waiting("ImagePullBackOff")],
        [],  # the kubelet's retry pulled it: the container runs
    ]
    for problems in polls:
        assert judge.first_fatal(problems) is None, f"failed at {clock.now:g} s"
        clock.sleep(1.0)


def test_a_pull_that_keeps_failing_fails_the_rollout_after_the_kubelets_retry() -> None:
    clock = FakeClock()
    judge = ProblemJudge(clock=clock)
    reasons = ["ErrImagePull", "ImagePullBackOff"]  # the kubelet alternates them: one problem
    found = None
    while found is None and clock.now < 120:
        found = judge.first_fatal([waiting(reasons[int(clock.now) % 2], "manifest unknown")])
        clock.sleep(1.0)
    assert found is not None
    assert clock.now - 1.0 == RETRY_GRACE_SECONDS


@pytest.mark.parametrize("reason", ["InvalidImageName", "ErrImageNeverPull", "RunContainerError"])
def test_a_problem_the_kubelet_does_not_retry_fails_at_the_first_poll(reason: str) -> None:
    assert ProblemJudge(clock=FakeClock()).first_fatal([waiting(reason)]) is not None


def test_a_secret_applied_a_moment_after_the_pod_does_not_fail_the_rollout() -> None:
    clock = FakeClock()
    judge = ProblemJudge(clock=clock)
    assert (
        judge.first_fatal([waiting("CreateContainerConfigError", 'secret "x" not found')]) is None
    )
    clock.sleep(RETRY_GRACE_SECONDS)
    assert judge.first_fatal([waiting("CreateContainerConfigError")]) is not None


def event(kind: str, name: str, reason: str, when: str) -> dict[str, Any]:
    return {
        "involvedObject": {"kind": kind, "name": name},
        "reason": reason,
        "message": f"{reason} on {name}",
        "type": "Warning",
        "lastTimestamp": when,
    }


def test_only_events_of_the_rollouts_replica_set_and_its_pods_are_shown() -> None:
    """Recorded: an HPA of the Deployment's name warned while the new pods crash-looped."""
    events = [
        event("Pod", "manifest-app-new22-abcde", "BackOff", "2026-11-30T10:00:20Z"),
        event(
            "HorizontalPodAutoscaler",
            "manifest-app",
            "FailedGetResourceMetric",
            "2026-11-30T10:00:25Z",
        ),
        event("Pod", "manifest-app-old11-fghij", "Unhealthy", "2026-11-30T10:00:26Z"),
        event("ReplicaSet", "manifest-app-new22", "FailedCreate", "2026-11-30T10:00:05Z"),
        event("Deployment", "manifest-app", "Whatever", "2026-11-30T10:00:27Z"),
    ]
    chosen = own_events(events, replica_set("manifest-app-new22", "4"))
    assert [e["reason"] for e in chosen] == ["FailedCreate", "BackOff"]


# --- rolling out an immutable image -------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "name"),
    [
        ("localhost:30002/a/b:latest", "localhost:30002/a/b"),
        ("localhost:30002/a/b@sha256:ab", "localhost:30002/a/b"),
        ("localhost:30002/a/b:v1-x@sha256:ab", "localhost:30002/a/b"),
        ("localhost:30002/a/b", "localhost:30002/a/b"),
        ("busybox", "busybox"),
    ],
)
def test_image_name_drops_tag_and_digest(image: str, name: str) -> None:
    assert image_name(image) == name


def test_the_image_patch_sets_the_apps_container_and_restarts() -> None:
    deployment = recorded(status={})
    deployment["spec"]["template"]["spec"]["containers"].append(
        {"name": "sidecar", "image": "localhost:30002/other:1"}
    )
    container = app_container(deployment, "localhost:30002/studenten/manifest-app")
    assert container == "app"
    digest_ref = "localhost:30002/studenten/manifest-app@sha256:" + "a" * 64
    patch = image_patch(container, digest_ref, "2026-11-30T10:00:00Z")
    template = patch["spec"]["template"]
    assert template["spec"]["containers"] == [{"name": "app", "image": digest_ref}]
    assert template["metadata"]["annotations"] == {RESTARTED_AT: "2026-11-30T10:00:00Z"}
    with pytest.raises(RolloutFailed, match="no single container running localhost:30002/x"):
        app_container(deployment, "localhost:30002/x")
