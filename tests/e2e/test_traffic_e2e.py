"""The seed's traffic path on the lab, with the manifests as shipped (`inv deploy`, overlay
`test`): the Ingress served by an ingress controller, Swagger UI through it in a real
browser, the HPA scaling on real CPU figures, the NetworkPolicies enforced, and Pod Security
admission on the namespace deploy creates.

The lab runs Traefik's ingress-nginx provider (class `nginx`), metrics-server behind the
aggregation layer and kube-router's firewall (lab/labkit/addons.py). One namespace for the
module, made by `inv deploy` (its labels are deploy's own) and deleted afterwards.

The one change after deploy: the Ingress's host becomes `<namespace>.localhost` (a name that
always means this machine), so Ingresses of other test namespaces (same host `localhost`,
same paths) cannot answer for ours. k8s/README.md lists it.
"""

from __future__ import annotations

import http.client
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from ops.deploy import POD_SECURITY_LABELS
from tests.e2e.conftest import Registry, wait_until
from tests.e2e.test_deploy_e2e import Lab, forget_namespace, make_lab, pushed_digest
from tests.e2e.test_manifests_e2e import exec_in
from tests.support.browser import (
    STUDENT_OPERATIONS,
    artifacts_dir,
    find_chromium,
    listed_operations,
    offline_chromium,
)
from tests.support.services import missing

pytestmark = pytest.mark.e2e

BUSYBOX = "lab.local/busybox:stable"  # imported into the node by the lab (no pull)
APP = "app.kubernetes.io/name=manifest-app"
INGRESS = "manifest-app-ingress"
OURS = ("manifest-app", "postgres", "postgres-backup")  # app.kubernetes.io/name of our pods


@pytest.fixture(scope="module")
def ingress_port() -> int:
    url = os.environ.get("MANIFEST_LAB_INGRESS_URL", "")
    if not url:
        missing("MANIFEST_LAB_INGRESS_URL is not set: no ingress controller (lab.py cluster-up)")
    port = urlsplit(url).port
    assert port is not None, url
    return port


@pytest.fixture(scope="module")
def deployed(
    tmp_path_factory: pytest.TempPathFactory,
    core_v1: Any,
    kube_context: str,
    registry: Registry,
    app_image: str,
) -> Iterator[Lab]:
    """The test overlay, deployed by `inv deploy` into a namespace it creates."""
    namespace = f"e2e-traffic-{uuid.uuid4().hex[:8]}"
    lab = make_lab(tmp_path_factory.mktemp("traffic"), namespace, kube_context, registry, core_v1)
    try:
        result = lab.inv("deploy", "--image", pushed_digest(registry, app_image))
        assert result.returncode == 0, result.stdout + result.stderr
        yield lab
    finally:
        forget_namespace(core_v1, namespace)


@pytest.fixture(scope="module")
def host(deployed: Lab, core_v1: Any, ingress_port: int) -> str:
    """The Ingress's host in this namespace, once the controller has published its address."""
    from kubernetes import client

    networking = client.NetworkingV1Api(core_v1.api_client)
    name = f"{deployed.namespace}.localhost"
    networking.patch_namespaced_ingress(
        INGRESS,
        deployed.namespace,
        [{"op": "replace", "path": "/spec/rules/0/host", "value": name}],
    )

    def published() -> bool:
        status = networking.read_namespaced_ingress(INGRESS, deployed.namespace).status
        return bool(status.load_balancer and status.load_balancer.ingress)

    wait_until(published, timeout=60, what=f"the controller to publish {INGRESS}'s address")
    wait_until(
        lambda: get(ingress_port, name, "/api/student")[0] == 200,
        timeout=60,
        what=f"http://{name}:{ingress_port}/api/student to answer 200",
    )
    return name


def request(port: int, host: str, method: str, path: str, body: object = None) -> tuple[int, bytes]:
    """One HTTP request to the ingress controller on this machine, with ``Host: host``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Host": host, "Content-Type": "application/json"}
        conn.request(method, path, body=payload, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def get(port: int, host: str, path: str) -> tuple[int, bytes]:
    try:
        return request(port, host, "GET", path)
    except OSError:
        return 0, b""


# --- Ingress ---------------------------------------------------------------------------------


def test_the_ingress_routes_api_and_swagger_to_the_app_and_nothing_else(
    deployed: Lab, host: str, ingress_port: int
) -> None:
    status, body = request(ingress_port, host, "POST", "/api/student", {"name": "Ada", "age": 36})
    assert status in (200, 201), body
    created = json.loads(body)

    status, body = request(ingress_port, host, "GET", "/api/student")

    assert status == 200, body
    assert {"id": created["id"], "name": "Ada", "age": 36} in json.loads(body)
    status, body = request(ingress_port, host, "GET", "/swagger")
    assert status == 200 and b"swagger-ui" in body, body[:300]
    status, body = request(ingress_port, host, "GET", "/swagger/v1/swagger.json")
    assert status == 200 and json.loads(body)["paths"]["/api/student"]
    # The app answers these itself, but they are not in the Ingress.
    assert request(ingress_port, host, "GET", "/metrics")[0] == 404
    assert request(ingress_port, host, "GET", "/health/live")[0] == 404
    assert request(ingress_port, f"other-{host}", "GET", "/api/student")[0] == 404


def test_doctor_reports_the_ingress_address(deployed: Lab, host: str) -> None:
    result = deployed.inv("doctor")

    lines = [line for line in result.stdout.splitlines() if "Ingress" in line]
    assert lines, result.stdout + result.stderr
    assert "✓" in lines[0] and INGRESS in lines[0], lines
    assert f"http://{host}" in lines[0] and "127.0.0.1" in lines[0], lines


def test_swagger_ui_through_the_ingress_renders_offline_in_chromium(
    deployed: Lab, host: str, ingress_port: int
) -> None:
    browser = find_chromium()
    screenshot = artifacts_dir() / "swagger-ui-ingress.png"
    screenshot.unlink(missing_ok=True)

    dom = offline_chromium(
        browser, f"http://{host}:{ingress_port}/swagger", screenshot, local_hosts=[host]
    )

    listed = listed_operations(dom)
    assert listed >= STUDENT_OPERATIONS, f"UI lists {sorted(listed)}; screenshot {screenshot}"
    assert 'id="operations-tag-students"' in dom
    assert screenshot.stat().st_size > 10_000


# --- HPA on the metrics API ------------------------------------------------------------------


def pod_cpu(core_v1: Any, namespace: str) -> dict[str, str]:
    """CPU usage of each app pod, as the metrics API (metrics-server) reports it."""
    from kubernetes import client

    metrics = client.CustomObjectsApi(core_v1.api_client).list_namespaced_custom_object(
        "metrics.k8s.io", "v1beta1", namespace, "pods", label_selector=APP
    )
    return {
        item["metadata"]["name"]: item["containers"][0]["usage"]["cpu"] for item in metrics["items"]
    }


def hpa_figures(core_v1: Any, namespace: str) -> tuple[int | None, int, int, int]:
    """`kubectl get hpa`: current CPU %, target CPU %, current and desired replicas."""
    from kubernetes import client

    hpa = client.AutoscalingV2Api(core_v1.api_client).read_namespaced_horizontal_pod_autoscaler(
        "manifest-app", namespace
    )
    current = None
    for metric in hpa.status.current_metrics or []:
        if metric.resource and metric.resource.name == "cpu":
            current = metric.resource.current.average_utilization
    target = hpa.spec.metrics[0].resource.target.average_utilization
    return current, target, hpa.status.current_replicas or 0, hpa.status.desired_replicas or 0


# Bounded load from inside the cluster: only the app's Service, 3 workers, at most 2000
# requests each and at most 150 s, then the pod ends by itself.
LOAD_SCRIPT = """
for w in 1 2 3; do
  (i=0; while [ $i -lt 2000 ]; do
     wget -q -O /dev/null http://manifest-app-service/api/student || true; i=$((i+1));
   done) &
done
wait
echo load-done
"""


def test_the_hpa_scales_out_under_cpu_load_and_back(deployed: Lab, core_v1: Any) -> None:
    from kubernetes import client

    namespace = deployed.namespace
    apps = client.AppsV1Api(core_v1.api_client)

    def idle_figures() -> bool:
        current, _, replicas, _ = hpa_figures(core_v1, namespace)
        return current is not None and replicas == 2

    wait_until(idle_figures, timeout=150, what="the HPA's first CPU figure", interval=3)
    assert len(pod_cpu(core_v1, namespace)) >= 2
    load = client.V1Pod(
        metadata=client.V1ObjectMeta(name="cpu-load"),
        spec=client.V1PodSpec(
            restart_policy="Never",
            active_deadline_seconds=150,
            containers=[
                client.V1Container(
                    name="load",
                    image=BUSYBOX,
                    image_pull_policy="Never",
                    command=["timeout", "140", "sh", "-c", LOAD_SCRIPT],
                )
            ],
        ),
    )
    core_v1.create_namespaced_pod(namespace, load)
    seen: list[tuple[int | None, int, int, int]] = []

    def scaled_out() -> bool:
        seen.append(hpa_figures(core_v1, namespace))
        current, target, _, desired = seen[-1]
        return desired > 2 and current is not None and current > target

    try:
        wait_until(scaled_out, timeout=180, what="the HPA to scale above 2", interval=5)
    finally:
        core_v1.delete_namespaced_pod("cpu-load", namespace, grace_period_seconds=0)
    current, target, _, desired = seen[-1]
    print(f"HPA under load: cpu {current}%/{target}%, desired replicas {desired}")
    assert target == 70
    wait_until(
        lambda: (apps.read_namespaced_deployment("manifest-app", namespace).spec.replicas or 0) > 2,
        timeout=30,
        what="the Deployment above 2 replicas",
    )

    def back_to_two() -> bool:
        seen.append(hpa_figures(core_v1, namespace))
        return apps.read_namespaced_deployment("manifest-app", namespace).spec.replicas == 2

    wait_until(back_to_two, timeout=240, what="the HPA to scale back to 2", interval=5)
    print(f"HPA after the load: {seen[-1]}")


# --- NetworkPolicies -------------------------------------------------------------------------


def app_image_of(core_v1: Any, namespace: str) -> str:
    from kubernetes import client

    deployment = client.AppsV1Api(core_v1.api_client).read_namespaced_deployment(
        "manifest-app", namespace
    )
    image: str = deployment.spec.template.spec.containers[0].image
    return image


def probe(core_v1: Any, namespace: str, name: str, labels: dict[str, str], code: str) -> str:
    """The output of ``python -c code`` in a pod of the app's image (already on the node)
    with ``labels``; the pod must end within 90 s."""
    from kubernetes import client

    core_v1.create_namespaced_pod(
        namespace,
        client.V1Pod(
            metadata=client.V1ObjectMeta(name=name, labels=labels),
            spec=client.V1PodSpec(
                restart_policy="Never",
                image_pull_secrets=[client.V1LocalObjectReference(name="harbor-regcred")],
                containers=[
                    client.V1Container(
                        name="probe",
                        image=app_image_of(core_v1, namespace),
                        command=["python", "-c", code],
                    )
                ],
            ),
        ),
    )

    def ended() -> bool:
        phase = core_v1.read_namespaced_pod(name, namespace).status.phase
        return phase in ("Succeeded", "Failed")

    wait_until(ended, timeout=90, what=f"probe pod {name} to end")
    log: str = core_v1.read_namespaced_pod_log(name, namespace)
    core_v1.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
    return log


# Up to 30 s of attempts: kube-router adds a new pod to its policies' address sets a moment
# after the pod starts. Dropped (timeout) or rejected (refused) both mean blocked.
CONNECT = """
import socket, time
deadline = time.monotonic() + 30
while True:
    try:
        socket.create_connection(("postgres-service", 5432), timeout=5).close()
        result = "connected"
    except TimeoutError:
        result = "timeout"
    except OSError as exc:
        result = f"error:{exc}"
    if result == "connected" or time.monotonic() > deadline:
        break
    time.sleep(1)
print(f"result={result}")
"""
WEB = """
import urllib.request
with urllib.request.urlopen("http://manifest-app-service/api/student", timeout=10) as r:
    print("web", r.status)
"""


def test_only_the_app_and_the_backup_daemon_reach_postgresql(deployed: Lab, core_v1: Any) -> None:
    namespace = deployed.namespace

    as_app = probe(
        core_v1, namespace, "as-app", {"app.kubernetes.io/name": "manifest-app"}, CONNECT
    )
    stranger = probe(core_v1, namespace, "stranger", {}, CONNECT)

    assert "result=connected" in as_app, as_app
    assert "result=" in stranger and "result=connected" not in stranger, stranger
    print(f"an unlabelled pod to PostgreSQL: {stranger.strip()}")
    # The stranger's other traffic is untouched: DNS and the app's Service answer it.
    assert "web 200" in probe(core_v1, namespace, "stranger-web", {}, WEB)
    # The app itself resolves names.
    app_pod = core_v1.list_namespaced_pod(namespace, label_selector=APP).items[0].metadata.name
    resolved = exec_in(
        core_v1,
        namespace,
        app_pod,
        ["python", "-c", "import socket; print(socket.gethostbyname('postgres-service'))"],
    )
    assert resolved.strip().count(".") == 3, resolved
    # The backup daemon still gets through: a new good backup after the probes.
    daemon = core_v1.list_namespaced_pod(
        namespace, label_selector="app.kubernetes.io/name=postgres-backup"
    ).items[0]
    name = daemon.metadata.name

    def good_backups() -> int:
        return str(core_v1.read_namespaced_pod_log(name, namespace)).count(" backup ok file=")

    before = good_backups()
    wait_until(
        lambda: good_backups() > before,
        timeout=90,
        what="a new good backup by the daemon",
        interval=3,
    )


def test_backup_now_and_restore_work_under_the_policies(deployed: Lab) -> None:
    backups = Path(deployed.env["MANIFEST_BACKUPS_DIR"])

    taken = deployed.inv("backup.now", timeout=300)

    assert taken.returncode == 0, taken.stdout + taken.stderr
    dumps = [p for p in backups.iterdir() if p.name.endswith((".dump", ".sql"))]
    assert len(dumps) == 1 and dumps[0].stat().st_size > 0, list(backups.iterdir())
    restored = deployed.inv("backup.restore", "--file", str(dumps[0]), "--yes", timeout=300)
    assert restored.returncode == 0, restored.stdout + restored.stderr


# --- Pod Security admission ------------------------------------------------------------------


def test_pod_security_baseline_enforced_and_the_app_passes_restricted(
    deployed: Lab, core_v1: Any
) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    namespace = deployed.namespace
    labels = core_v1.read_namespace(namespace).metadata.labels
    assert {k: labels.get(k) for k in POD_SECURITY_LABELS} == POD_SECURITY_LABELS
    # Everything deploy made runs under `enforce: baseline`.
    pods = [
        p for p in core_v1.list_namespaced_pod(namespace).items
        if (p.metadata.labels or {}).get("app.kubernetes.io/name") in OURS
    ]  # fmt: skip
    names = {p.metadata.labels.get("app.kubernetes.io/name") for p in pods}
    assert {"manifest-app", "postgres", "postgres-backup"} <= names
    assert all(p.status.phase == "Running" for p in pods), [p.status.phase for p in pods]

    # The same pods, dry-run into a namespace enforcing `restricted`: only the app passes.
    strict = f"e2e-restricted-{uuid.uuid4().hex[:6]}"
    core_v1.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(
        name=strict, labels={"pod-security.kubernetes.io/enforce": "restricted",
                             "manifest.test/e2e": "true"})))  # fmt: skip
    try:
        wait_until(
            lambda: any(sa.metadata.name == "default"
                        for sa in core_v1.list_namespaced_service_account(strict).items),
            timeout=30, what=f"ServiceAccount default in {strict}",
        )  # fmt: skip
        verdicts: dict[str, str] = {}
        for name in ("manifest-app", "postgres", "postgres-backup"):
            pod = next(p for p in pods if p.metadata.labels.get("app.kubernetes.io/name") == name)
            spec = pod.spec
            spec.node_name = None
            spec.priority = None
            spec.service_account_name = "default"
            spec.volumes = [v for v in spec.volumes if not v.name.startswith("kube-api-access")]
            for container in (spec.init_containers or []) + spec.containers:
                container.volume_mounts = [
                    m for m in container.volume_mounts or []
                    if not m.name.startswith("kube-api-access")
                ]  # fmt: skip
            copy = client.V1Pod(metadata=client.V1ObjectMeta(name=f"{name}-copy"), spec=spec)
            try:
                core_v1.create_namespaced_pod(strict, copy, dry_run="All")
                verdicts[name] = "admitted"
            except ApiException as exc:
                assert exc.status == 403, exc.body
                verdicts[name] = "refused: " + json.loads(exc.body)["message"]
    finally:
        core_v1.delete_namespace(strict)
    assert verdicts["manifest-app"] == "admitted"
    assert "data-owner" in verdicts["postgres"], verdicts
    assert "volume-owner" in verdicts["postgres-backup"], verdicts


def test_a_privileged_pod_is_refused_in_our_namespace(deployed: Lab, core_v1: Any) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name="privileged"),
        spec=client.V1PodSpec(containers=[client.V1Container(
            name="root", image=BUSYBOX, image_pull_policy="Never", command=["true"],
            security_context=client.V1SecurityContext(privileged=True),
        )]),
    )  # fmt: skip

    with pytest.raises(ApiException) as refused:
        core_v1.create_namespaced_pod(deployed.namespace, pod)

    assert refused.value.status == 403
    message = json.loads(refused.value.body)["message"]
    assert 'violates PodSecurity "baseline:latest"' in message and "privileged" in message


def test_metrics_api_reports_node_cpu(core_v1: Any) -> None:
    """The aggregation layer answers for metrics.k8s.io from a real kubelet scrape."""
    from kubernetes import client

    api = client.CustomObjectsApi(core_v1.api_client)
    deadline = time.monotonic() + 90
    nodes: dict[str, Any] = {"items": []}
    while time.monotonic() < deadline and not nodes["items"]:
        nodes = api.list_cluster_custom_object("metrics.k8s.io", "v1beta1", "nodes")
        time.sleep(3)
    assert nodes["items"], "no node metrics within 90 s"
    usage = nodes["items"][0]["usage"]
    assert usage["cpu"] != "0" and usage["memory"].endswith("Ki"), usage
