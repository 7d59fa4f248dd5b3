"""Policy over the rendered objects: security, resources, probes, and the names others rely on.

The schema tests say the objects are valid Kubernetes; these say they are *ours*: the
names the app, the tasks (ops.config defaults, ops.secrets) and the backup tooling expect.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ops.config import Settings
from ops.secrets import DB_SECRET, PULL_SECRET
from tests.manifests.render import EXPECTED, K8S, OVERLAYS, Manifest, find

WORKLOAD_KINDS = ("Deployment", "StatefulSet")
# Containers allowed to start as root, and the only capabilities each may add. Everything
# else runs as a non-root user with no capabilities at all.
ROOT_ALLOWED = {
    ("postgres", "data-owner"): {"CHOWN"},
    ("postgres-backup", "volume-owner"): {"CHOWN"},
}
DEFAULTS = Settings()


def containers(manifests: list[Manifest]) -> Iterator[tuple[str, str, dict[str, Any], bool]]:
    """(workload, container name, container, is_init) for every container of every workload."""
    for m in manifests:
        if m["kind"] in WORKLOAD_KINDS:
            pod = m["spec"]["template"]["spec"]
            for c in pod.get("initContainers", []):
                yield m["metadata"]["name"], c["name"], c, True
            for c in pod["containers"]:
                yield m["metadata"]["name"], c["name"], c, False


def pod_spec(manifests: list[Manifest], kind: str, name: str) -> dict[str, Any]:
    spec: dict[str, Any] = find(manifests, kind, name)["spec"]["template"]["spec"]
    return spec


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def objects(rendered: dict[str, list[Manifest]], overlay: str) -> list[Manifest]:
    return rendered[overlay]


# --- security ---------------------------------------------------------------------------


def test_no_secret_objects_anywhere(rendered: dict[str, list[Manifest]]) -> None:
    for name, manifests in rendered.items():
        assert [m for m in manifests if m["kind"] == "Secret"] == [], name


def test_no_secret_manifest_files_in_git() -> None:
    for path in K8S.rglob("*.yaml"):
        assert "kind: Secret" not in path.read_text(), path


def test_every_container_is_locked_down(objects: list[Manifest]) -> None:
    for workload, name, c, _ in containers(objects):
        sc = c.get("securityContext", {})
        label = f"{workload}/{name}"
        assert sc.get("allowPrivilegeEscalation") is False, label
        assert sc.get("readOnlyRootFilesystem") is True, label
        assert sc.get("capabilities", {}).get("drop") == ["ALL"], label
        added = set(sc.get("capabilities", {}).get("add", []))
        if (workload, name) in ROOT_ALLOWED:
            assert added <= ROOT_ALLOWED[(workload, name)], label
        else:
            assert added == set(), label
            assert sc.get("runAsNonRoot") is True, label
            assert sc.get("runAsUser", 0) != 0, label


def test_every_pod_uses_the_runtime_default_seccomp_profile(objects: list[Manifest]) -> None:
    for m in objects:
        if m["kind"] in WORKLOAD_KINDS:
            pod = m["spec"]["template"]["spec"]
            profile = pod.get("securityContext", {}).get("seccompProfile", {})
            assert profile == {"type": "RuntimeDefault"}, m["metadata"]["name"]
            assert pod.get("automountServiceAccountToken") is False, m["metadata"]["name"]


def test_every_container_has_requests_and_limits(objects: list[Manifest]) -> None:
    for workload, name, c, _ in containers(objects):
        resources = c.get("resources", {})
        for part in ("requests", "limits"):
            assert set(resources.get(part, {})) >= {"cpu", "memory"}, f"{workload}/{name}"


def test_every_long_running_container_has_probes(objects: list[Manifest]) -> None:
    for workload, name, c, init in containers(objects):
        if not init:
            assert "livenessProbe" in c, f"{workload}/{name}"
            assert "readinessProbe" in c, f"{workload}/{name}"


def test_root_exceptions_are_exactly_the_root_containers(objects: list[Manifest]) -> None:
    """ROOT_ALLOWED lists no container that has since stopped needing root."""
    as_root = {
        (workload, name)
        for workload, name, c, _ in containers(objects)
        if c.get("securityContext", {}).get("runAsUser") == 0
    }
    assert as_root == set(ROOT_ALLOWED)


# --- the app ----------------------------------------------------------------------------


def test_app_deployment(objects: list[Manifest], overlay: str) -> None:
    deployment = find(objects, "Deployment", DEFAULTS.deployment)
    assert deployment["metadata"]["namespace"] == EXPECTED[overlay]["namespace"]
    assert deployment["spec"]["replicas"] == EXPECTED[overlay]["replicas"]
    strategy = deployment["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0

    pod = deployment["spec"]["template"]
    assert pod["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8080",
        "prometheus.io/path": "/metrics",
    }
    spec = pod["spec"]
    assert spec["imagePullSecrets"] == [{"name": PULL_SECRET}]
    assert spec["securityContext"]["runAsUser"] == 1000
    (app,) = spec["containers"]
    assert app["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert app["resources"]["limits"] == (
        {"cpu": "1", "memory": "1Gi"}
        if overlay == "production"
        else {"cpu": "500m", "memory": "512Mi"}
    )
    probes = {
        kind: (app[kind]["httpGet"]["path"], app[kind]["httpGet"]["port"])
        for kind in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert probes == {
        "startupProbe": ("/health/startup", "http"),
        "livenessProbe": ("/health/live", "http"),
        "readinessProbe": ("/health/ready", "http"),
    }


def test_postgres_can_hold_a_100_mib_field_during_a_restore(
    objects: list[Manifest], overlay: str
) -> None:
    """Seen: a restore of one 100 MiB bytea value got the server OOM-killed under 1Gi
    (server process ~685 MB plus the restore client in the same container)."""
    (postgres,) = pod_spec(objects, "StatefulSet", "postgres")["containers"]
    limit = postgres["resources"]["limits"]["memory"]
    units = {"Mi": 1, "Gi": 1024}
    mib = int(limit[:-2]) * units[limit[-2:]]
    assert mib >= 2048, f"{overlay}: postgres memory limit {limit}"


def test_app_image_is_pinned_outside_development(objects: list[Manifest], overlay: str) -> None:
    (app,) = pod_spec(objects, "Deployment", DEFAULTS.deployment)["containers"]
    repository, tag = app["image"].rsplit(":", 1)
    assert repository == DEFAULTS.image == "localhost:30002/studenten/manifest-app"
    if overlay in ("development", "test"):
        assert (tag, app["imagePullPolicy"]) == ("latest", "Always")
    else:
        assert tag.startswith("v1-") and tag != "latest"
        assert app["imagePullPolicy"] == "IfNotPresent"


def test_app_configuration_comes_from_app_config_and_db_credentials(
    objects: list[Manifest],
) -> None:
    config = find(objects, "ConfigMap", "app-config")
    assert config["data"] == {"database-host": "postgres-service", "database-name": "studentdb"}
    spec = pod_spec(objects, "Deployment", DEFAULTS.deployment)
    env = env_of(spec["containers"][0])
    assert env == {
        "DB_HOST": {"configMapKeyRef": {"name": "app-config", "key": "database-host"}},
        "DB_PORT": "5432",
        "DB_NAME": {"configMapKeyRef": {"name": "app-config", "key": "database-name"}},
        "DB_USER": {"secretKeyRef": {"name": DB_SECRET, "key": "username"}},
        "DB_PASSWORD": {"secretKeyRef": {"name": DB_SECRET, "key": "password"}},
    }
    mounts = {m["name"]: m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert mounts["app-secrets"] == "/etc/app-secrets"
    assert volumes["app-secrets"]["secret"]["secretName"] == DB_SECRET
    assert volumes["app-secrets"]["secret"]["items"] == [
        {"key": "username", "path": "db_user"},
        {"key": "password", "path": "db_password"},
    ]
    assert "emptyDir" in volumes[next(n for n, p in mounts.items() if p == "/tmp")]


def test_app_service_and_ingress(objects: list[Manifest], overlay: str) -> None:
    service = find(objects, "Service", "manifest-app-service")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"][0]["port"] == 80
    assert service["spec"]["ports"][0]["targetPort"] == "http"  # the container's 8080
    app_labels = find(objects, "Deployment", DEFAULTS.deployment)["spec"]["template"]["metadata"]
    assert service["spec"]["selector"].items() <= app_labels["labels"].items()

    ingress = find(objects, "Ingress", "manifest-app-ingress")
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == EXPECTED[overlay]["host"]
    routes = {p["path"]: p["backend"]["service"]["name"] for p in rule["http"]["paths"]}
    assert routes == {"/api": "manifest-app-service", "/swagger": "manifest-app-service"}


def test_app_scaling_and_disruption_budget(objects: list[Manifest], overlay: str) -> None:
    hpa = find(objects, "HorizontalPodAutoscaler", DEFAULTS.deployment)
    assert hpa["spec"]["scaleTargetRef"]["name"] == DEFAULTS.deployment
    assert hpa["spec"]["minReplicas"] == EXPECTED[overlay]["replicas"]
    assert hpa["spec"]["maxReplicas"] == 10
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["averageUtilization"] == 70

    pdb = find(objects, "PodDisruptionBudget", DEFAULTS.deployment)
    # The budget must let a drain proceed: fewer pods may go than there are.
    assert 1 <= pdb["spec"]["maxUnavailable"] < EXPECTED[overlay]["replicas"]


# --- PostgreSQL and the backup daemon ----------------------------------------------------


def test_postgres_statefulset(objects: list[Manifest]) -> None:
    statefulset = find(objects, "StatefulSet", "postgres")
    assert f"{statefulset['metadata']['name']}-0" == DEFAULTS.postgres_pod
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    # PVC name = <template>-<statefulset>-0, the seed's postgres-data-postgres-0.
    assert claim["metadata"]["name"] == "postgres-data"
    assert claim["spec"]["resources"]["requests"]["storage"] == "10Gi"
    assert "Prune=false" in claim["metadata"]["annotations"]["argocd.argoproj.io/sync-options"]
    (pg,) = statefulset["spec"]["template"]["spec"]["containers"]
    assert pg["image"].rsplit(":", 1)[1].startswith("15")
    env = env_of(pg)
    assert env["POSTGRES_DB"] == DEFAULTS.database == "studentdb"
    assert env["POSTGRES_USER"] == {"secretKeyRef": {"name": DB_SECRET, "key": "username"}}
    assert env["POSTGRES_PASSWORD"] == {"secretKeyRef": {"name": DB_SECRET, "key": "password"}}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert "pg_isready" in " ".join(pg[probe]["exec"]["command"]), probe

    service = find(objects, "Service", "postgres-service")
    assert service["spec"]["ports"][0]["port"] == 5432
    assert statefulset["spec"]["serviceName"] == "postgres-service"


def test_backup_daemon(objects: list[Manifest], overlay: str) -> None:
    deployment = find(objects, "Deployment", DEFAULTS.backup_daemon)
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    spec = deployment["spec"]["template"]["spec"]
    (daemon,) = spec["containers"]
    assert daemon["command"] == ["sh", "/scripts/backup.sh", "loop"]
    env = env_of(daemon)
    assert env["PGHOST"] == "postgres-service"
    assert env["PGDATABASE"] == DEFAULTS.database
    assert env["PGUSER"] == {"secretKeyRef": {"name": DB_SECRET, "key": "username"}}
    assert env["PGPASSWORD"] == {"secretKeyRef": {"name": DB_SECRET, "key": "password"}}
    assert env["KEEP"] == "10"
    assert env["BACKUP_INTERVAL_SECONDS"] == ("20" if overlay == "test" else "1800")

    mounts = {m["mountPath"]: m["name"] for m in daemon["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes[mounts["/backups"]]["persistentVolumeClaim"]["claimName"] == (
        "postgres-backup-pvc"
    )
    script_map = volumes[mounts["/scripts"]]["configMap"]["name"]
    script = find(objects, "ConfigMap", "postgres-backup-script")
    assert script["metadata"]["name"] == script_map
    assert script["data"]["backup.sh"] == (K8S / "base" / "backup" / "backup.sh").read_text()

    pvc = find(objects, "PersistentVolumeClaim", "postgres-backup-pvc")
    assert pvc["spec"]["resources"]["requests"]["storage"] == "5Gi"
    options = pvc["metadata"]["annotations"]["argocd.argoproj.io/sync-options"].split(",")
    assert "Prune=false" in [o.strip() for o in options]


def test_database_images_in_the_test_overlay_come_from_the_lab_registry(
    rendered: dict[str, list[Manifest]],
) -> None:
    objects = rendered["test"]
    images = {c["image"] for _, _, c, _ in containers(objects)}
    assert images == {
        "localhost:30002/lab/postgres:15",
        "localhost:30002/studenten/manifest-app:latest",
    }
    for kind, name in (("StatefulSet", "postgres"), ("Deployment", "postgres-backup")):
        assert pod_spec(objects, kind, name)["imagePullSecrets"] == [{"name": PULL_SECRET}]


# --- the network ------------------------------------------------------------------------


def test_postgres_is_reachable_only_from_the_app_and_the_backup_daemon(
    objects: list[Manifest],
) -> None:
    policy = find(objects, "NetworkPolicy", "postgres")
    pg_labels = find(objects, "StatefulSet", "postgres")["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pg_labels.items()
    assert "Ingress" in policy["spec"]["policyTypes"]
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 5432}]
    allowed = set()
    for peer in rule["from"]:
        assert set(peer) == {"podSelector"}, "only pods of this namespace, chosen by label"
        selector = peer["podSelector"]["matchLabels"]
        matching = [
            m["metadata"]["name"]
            for m in objects
            if m["kind"] in WORKLOAD_KINDS
            and selector.items() <= m["spec"]["template"]["metadata"]["labels"].items()
        ]
        allowed.update(matching)
    assert allowed == {DEFAULTS.deployment, DEFAULTS.backup_daemon}


def test_every_pod_may_resolve_names(objects: list[Manifest]) -> None:
    for policy in (m for m in objects if m["kind"] == "NetworkPolicy"):
        if "Egress" not in policy["spec"]["policyTypes"]:
            continue
        ports = [
            (p["protocol"], p["port"]) for rule in policy["spec"]["egress"] for p in rule["ports"]
        ]
        assert {("UDP", 53), ("TCP", 53)} <= set(ports), policy["metadata"]["name"]


def test_every_workload_is_covered_by_a_network_policy(objects: list[Manifest]) -> None:
    selectors = [
        p["spec"]["podSelector"]["matchLabels"] for p in objects if p["kind"] == "NetworkPolicy"
    ]
    for m in objects:
        if m["kind"] in WORKLOAD_KINDS:
            labels = m["spec"]["template"]["metadata"]["labels"]
            assert any(s.items() <= labels.items() for s in selectors), m["metadata"]["name"]


# --- ArgoCD -----------------------------------------------------------------------------


@pytest.mark.parametrize("environment", ["development", "staging", "production"])
def test_argocd_application(rendered: dict[str, list[Manifest]], environment: str) -> None:
    app = find(rendered["argocd"], "Application", f"manifest-{environment}")
    spec = app["spec"]
    assert spec["source"]["path"] == f"k8s/overlays/{environment}"
    assert (K8S / "overlays" / environment / "kustomization.yaml").is_file()
    assert spec["destination"]["namespace"] == EXPECTED[environment]["namespace"]
    assert spec["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}
    assert "CreateNamespace=true" in spec["syncPolicy"]["syncOptions"]
    ignored = spec["ignoreDifferences"][0]
    assert (ignored["kind"], ignored["name"], ignored["jsonPointers"]) == (
        "Deployment",
        DEFAULTS.deployment,
        ["/spec/replicas"],
    )
    assert "RespectIgnoreDifferences=true" in spec["syncPolicy"]["syncOptions"]
    image_owned_by_pipeline = [
        d
        for d in spec["ignoreDifferences"][1:]
        if (d["kind"], d["name"]) == ("Deployment", DEFAULTS.deployment)
        and any(".image" in path for path in d.get("jqPathExpressions", ()))
    ]
    # Only development's image is the pipeline's; staging and production take theirs from git.
    assert bool(image_owned_by_pipeline) == (environment == "development")
    if image_owned_by_pipeline:
        deployment = find(rendered[environment], "Deployment", DEFAULTS.deployment)
        container = deployment["spec"]["template"]["spec"]["containers"][0]["name"]
        expression = image_owned_by_pipeline[0]["jqPathExpressions"][0]
        assert f'select(.name == "{container}")' in expression


@pytest.mark.parametrize("environment", ["development", "staging", "production"])
def test_argocd_creates_namespaces_with_deploys_pod_security_labels(
    rendered: dict[str, list[Manifest]], environment: str
) -> None:
    """ArgoCD's CreateNamespace and `inv deploy` label the namespace alike."""
    from ops.deploy import POD_SECURITY_LABELS

    app = find(rendered["argocd"], "Application", f"manifest-{environment}")
    managed = app["spec"]["syncPolicy"]["managedNamespaceMetadata"]
    assert managed["labels"] == POD_SECURITY_LABELS
    assert POD_SECURITY_LABELS["pod-security.kubernetes.io/enforce"] == "baseline"


def test_production_daemon_runs_the_image_with_age_at_the_database_version(
    rendered: dict[str, list[Manifest]],
) -> None:
    """The official postgres image has no age: production's daemon runs the image built from
    k8s/backup-image/ (tests/integration/test_backup_image.py), with pg_dump of the same
    version as the database, pulled with the registry's pull secret."""
    objects = rendered["production"]
    database = find(objects, "StatefulSet", "postgres")["spec"]["template"]["spec"]
    daemon = pod_spec(objects, "Deployment", "postgres-backup")
    (container,) = [c for c in daemon["containers"] if c["name"] == "postgres-backup"]
    repository, tag = container["image"].rsplit(":", 1)
    assert repository == "localhost:30002/studenten/postgres-backup"
    assert tag == database["containers"][0]["image"].rsplit(":", 1)[1] == "15.10"
    assert daemon["imagePullSecrets"] == [{"name": PULL_SECRET}]
    assert "FROM ${BASE_IMAGE}" in (K8S / "backup-image" / "Dockerfile").read_text()


def group_kinds(manifests: list[Manifest]) -> set[tuple[str, str]]:
    """(API group, kind) of every object, as an AppProject whitelist names them."""
    return {
        (m["apiVersion"].rpartition("/")[0] if "/" in m["apiVersion"] else "", m["kind"])
        for m in manifests
    }


@pytest.mark.parametrize("environment", ["development", "staging", "production"])
def test_argocd_project_allows_only_its_namespace_and_its_overlays_kinds(
    rendered: dict[str, list[Manifest]], environment: str
) -> None:
    """The seed's RBAC row for ArgoCD: read/write in its own namespace, nothing else."""
    app = find(rendered["argocd"], "Application", f"manifest-{environment}")
    project = find(rendered["argocd"], "AppProject", app["spec"]["project"])
    spec = project["spec"]
    assert project["metadata"]["name"] == f"manifest-{environment}"  # not `default`
    assert project["metadata"]["namespace"] == app["metadata"]["namespace"]
    assert spec["destinations"] == [
        {
            "server": app["spec"]["destination"]["server"],
            "namespace": EXPECTED[environment]["namespace"],
        }
    ]
    assert spec["sourceRepos"] == [app["spec"]["source"]["repoURL"]]
    whitelist = {(g["group"], g["kind"]) for g in spec["namespaceResourceWhitelist"]}
    assert whitelist == group_kinds(rendered[environment])
    assert not any("*" in g + k for g, k in whitelist)
    assert ("", "Secret") not in whitelist  # Secrets come from `inv secrets.apply`, not git
    # Cluster-wide: only the Namespace CreateNamespace=true makes.
    assert spec["clusterResourceWhitelist"] == [{"group": "", "kind": "Namespace"}]
    assert "CreateNamespace=true" in app["spec"]["syncPolicy"]["syncOptions"]
