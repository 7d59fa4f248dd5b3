"""rollout.restart / rollout.status against the lab cluster, with an image pushed by ops.images.

Each test gets its own namespace (fixture `namespace`) with the pull secret harbor-regcred,
and a 2-replica Deployment like the app's (RollingUpdate, maxUnavailable 0).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ops.config import load_settings
from ops.errors import NotFound, RolloutTimeout
from ops.kube import KubeTarget
from ops.registry import Registry as RegistryApi
from tests.support.inv import clean_env
from tests.support.inv import run_inv as inv
from tests.support.services import missing

from .conftest import Registry, wait_until

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
BUSYBOX = Path("/bin/busybox")
DEPLOYMENT = "e2e-app"


@pytest.fixture(scope="module")
def good_image(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A FROM-scratch busybox image built and pushed through ops.images (both tags)."""
    if not BUSYBOX.is_file():
        missing(f"{BUSYBOX} is missing (apt-get install busybox-static)")
    if not os.environ.get("DOCKER_HOST"):
        missing("DOCKER_HOST is not set (source $MANIFEST_LAB_DIR/env)")
    from ops.images import build, plan_build, push

    context = tmp_path_factory.mktemp("rollout-image")
    shutil.copy2(BUSYBOX, context / "busybox")
    (context / "Dockerfile").write_text(
        "FROM scratch\nCOPY busybox /bin/busybox\n"
        'RUN ["/bin/busybox", "--install", "-s", "/bin"]\nUSER 1000\n'
        'CMD ["sh", "-c", "trap \'exit 0\' TERM; while true; do sleep 1; done"]\n',
        encoding="utf-8",
    )
    env_file = context / "empty.env"
    env_file.touch()
    settings = load_settings(
        {
            "registry": registry.host,
            "image_repository": f"e2e/rollout-{uuid.uuid4().hex[:8]}",
            "build_context": context,
        },
        env_file=env_file,
        environ={},
    )
    plan = plan_build(settings)
    build(plan)
    api = RegistryApi(
        host=registry.host, username=registry.user, password=registry.password, ca_file=registry.ca
    )
    push(plan.refs, api)
    yield str(plan.refs[0])
    import docker

    engine = docker.from_env()
    for ref in plan.refs:
        engine.images.remove(str(ref), force=True)
    engine.close()


@pytest.fixture
def target(namespace: str, kube_context: str) -> KubeTarget:
    return KubeTarget(
        kubeconfig=Path(os.environ["KUBECONFIG"]), context=kube_context, namespace=namespace
    )


@pytest.fixture
def apps_v1(kube_api: Any) -> Any:
    from kubernetes import client

    return client.AppsV1Api(kube_api)


def deployment_body(image: str, pull_secret: str) -> Any:
    from kubernetes import client

    labels = {"app": DEPLOYMENT}
    container = client.V1Container(
        name="app",
        image=image,
        image_pull_policy="Always",
        security_context=client.V1SecurityContext(
            run_as_user=1000,
            run_as_non_root=True,
            allow_privilege_escalation=False,
            capabilities=client.V1Capabilities(drop=["ALL"]),
        ),
    )
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=DEPLOYMENT, labels=labels),
        spec=client.V1DeploymentSpec(
            replicas=2,
            selector=client.V1LabelSelector(match_labels=labels),
            strategy=client.V1DeploymentStrategy(
                type="RollingUpdate",
                rolling_update=client.V1RollingUpdateDeployment(max_unavailable=0, max_surge=1),
            ),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(
                    containers=[container],
                    image_pull_secrets=[client.V1LocalObjectReference(name=pull_secret)],
                    termination_grace_period_seconds=2,
                ),
            ),
        ),
    )


@pytest.fixture
def rolled_out(
    apps_v1: Any, namespace: str, harbor_regcred: str, good_image: str, target: KubeTarget
) -> str:
    """The Deployment, created and rolled out completely (revision 1)."""
    from ops.rollout import wait

    apps_v1.create_namespaced_deployment(namespace, deployment_body(good_image, harbor_regcred))
    result = wait(target, DEPLOYMENT, timeout=120)
    assert result.status.done and result.status.ready == 2
    return DEPLOYMENT


def replica_sets(apps_v1: Any, namespace: str) -> dict[str, Any]:
    return {rs.metadata.name: rs for rs in apps_v1.list_namespaced_replica_set(namespace).items}


def test_restart_rolls_out_a_new_replica_set(
    apps_v1: Any, core_v1: Any, namespace: str, rolled_out: str, target: KubeTarget
) -> None:
    from ops.rollout import RESTARTED_AT, restart

    before = replica_sets(apps_v1, namespace)
    seen: list[str] = []
    result = restart(target, rolled_out, timeout=120, on_progress=lambda s: seen.append(s.phase))
    assert result.status.done
    assert result.status.updated == result.status.ready == result.status.available == 2
    assert seen[-1] == "complete" and len(seen) >= 2  # progress was reported while waiting

    deployment = apps_v1.read_namespaced_deployment(rolled_out, namespace)
    annotations = deployment.spec.template.metadata.annotations
    assert annotations[RESTARTED_AT] == result.restarted_at
    after = replica_sets(apps_v1, namespace)
    new = [name for name in after if name not in before]
    assert len(new) == 1, "a restart makes exactly one new ReplicaSet"
    assert after[new[0]].status.ready_replicas == 2
    old = next(iter(before))
    assert not after[old].spec.replicas  # the old ReplicaSet was scaled to zero
    assert result.revision == "2"


BROKEN_TEMPLATES = {
    # the image cannot be pulled
    "image-pull": (
        lambda image: {"image": image.rsplit(":", 1)[0] + ":no-such-tag"},
        {"ImagePullBackOff", "ErrImagePull"},
        "cannot pull the image",
    ),
    # a Secret the container's env refers to does not exist
    "missing-secret": (
        lambda image: {
            "env": [
                {
                    "name": "DB_PASSWORD",
                    "valueFrom": {"secretKeyRef": {"name": "no-such-secret", "key": "password"}},
                }
            ]
        },
        {"CreateContainerConfigError"},
        "Secret or ConfigMap",
    ),
}


@pytest.mark.parametrize("case", list(BROKEN_TEMPLATES))
def test_a_broken_rollout_fails_fast_with_its_reason_and_is_undone(
    apps_v1: Any, namespace: str, rolled_out: str, target: KubeTarget, good_image: str, case: str
) -> None:
    import time

    from ops.errors import RolloutFailed
    from ops.rollout import evaluate, wait

    change, reasons, hint = BROKEN_TEMPLATES[case]
    container = {"name": "app", **change(good_image)}
    patch = {"spec": {"template": {"spec": {"containers": [container]}}}}
    apps_v1.patch_namespaced_deployment(rolled_out, namespace, patch)
    problems: list[str] = []
    undone: list[str] = []
    started = time.monotonic()
    with pytest.raises(RolloutFailed) as caught:
        wait(
            target,
            rolled_out,
            timeout=240,
            undo_on_failure=True,
            on_problem=lambda p: problems.append(p.reason),
            on_undo=undone.append,
        )
    assert not isinstance(caught.value, RolloutTimeout)
    assert time.monotonic() - started < 120, "failed fast, long before the timeout"
    message = str(caught.value)
    assert caught.value.context["reason"] in reasons, message
    assert hint in caught.value.hint and "Raise --timeout" not in caught.value.hint
    assert reasons & set(problems)
    assert undone == ["1"]
    assert "rolled back to revision 1 (complete)" in message

    deployment = apps_v1.read_namespaced_deployment(rolled_out, namespace)
    assert deployment.spec.template.spec.containers[0].image == good_image
    assert "pod-template-hash" not in (deployment.spec.template.metadata.labels or {})
    wait_until(
        lambda: evaluate(apps_v1.read_namespaced_deployment(rolled_out, namespace)).done,
        timeout=60,
        what="the rolled-back Deployment to be complete",
    )


def test_missing_namespace_and_deployment_are_named(
    namespace: str, target: KubeTarget, kube_context: str
) -> None:
    from ops.rollout import read_status

    with pytest.raises(NotFound, match=rf"Deployment 'nope' not found in namespace '{namespace}'"):
        read_status(target, "nope")
    elsewhere = KubeTarget(
        kubeconfig=target.kubeconfig, context=kube_context, namespace="no-such-namespace"
    )
    with pytest.raises(NotFound, match=r"namespace 'no-such-namespace' not found"):
        read_status(elsewhere, "nope")


def run_inv(*args: str, namespace: str, kube_context: str) -> subprocess.CompletedProcess[str]:
    env = clean_env()
    env.update(COLUMNS="200", MANIFEST_NAMESPACE=namespace, MANIFEST_CONTEXT=kube_context)
    return inv(*args, env=env, cwd=ROOT, timeout=300)


def test_tasks_restart_and_status(namespace: str, rolled_out: str, kube_context: str) -> None:
    done = run_inv(
        "rollout.restart",
        "--deployment",
        rolled_out,
        "--timeout",
        "120",
        namespace=namespace,
        kube_context=kube_context,
    )
    assert done.returncode == 0, done.stderr
    assert "rolled out e2e-app (revision 2)" in done.stdout
    status = run_inv(
        "rollout.status", "--deployment", rolled_out, namespace=namespace, kube_context=kube_context
    )
    assert status.returncode == 0, status.stderr
    assert "successfully rolled out" in status.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--deployment", "nope"], "Deployment 'nope' not found in namespace"),
        (["--namespace", "no-such-namespace"], "namespace 'no-such-namespace' not found"),
        (["--context", "not-a-context"], "kube context 'not-a-context' is not in the kubeconfig"),
    ],
    ids=["deployment-missing", "namespace-missing", "context-unknown"],
)
def test_task_errors_are_one_line(
    namespace: str, kube_context: str, args: list[str], expected: str
) -> None:
    result = run_inv("rollout.restart", *args, namespace=namespace, kube_context=kube_context)
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], result.stderr
