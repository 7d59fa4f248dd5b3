"""ArgoCD on the lab (lab/labkit/argocd.py) syncing our own overlay out of git: the seed's
GitOps workflow, its RBAC row for ArgoCD, and our tasks beside it.

The Application and its AppProject are the lab overlay of k8s/argocd
(``$MANIFEST_TEST_ARGOCD_APPS``: repoURL rewritten to the lab's git repository, path
k8s/overlays/test), moved to a namespace of this module's own: both named after it, the
Application's destination and ``kustomize.namespace`` set to it, the project's destination
too, and ``targetRevision`` a branch of its own in the lab repository, holding this
checkout's k8s/ with the session's app image. Nobody runs kubectl: git commits and the
Kubernetes API (drift, deletions, ArgoCD's refresh annotation) only.

The tests share one deployment and run in order. The RBAC tests come last: a sync that
failed on a refused kind keeps retrying (retry limit 5, backoff up to 3 min), and while an
operation is in progress ArgoCD does not process the Application's deletion (seen).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import APP_REPOSITORY, Registry, copy_app_context, wait_until
from tests.e2e.test_deploy_e2e import Lab, forget_namespace, make_lab, report
from tests.e2e.test_manifests_e2e import service_call
from tests.manifests.render import Manifest, find, find_kustomize, render
from tests.support.services import missing

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
GROUP, VERSION = "argoproj.io", "v1alpha1"
TRACKING = "argocd.argoproj.io/tracking-id"
REFRESH = "argocd.argoproj.io/refresh"
CASCADE = "resources-finalizer.argocd.argoproj.io"
VOLUMES = ("postgres-data-postgres-0", "postgres-backup-pvc")
WORKLOADS = ("Deployment", "StatefulSet")
ROWS = (("Max", 25), ("Erika", 31), ("Jonas", 22))


@dataclass(frozen=True, kw_only=True)
class ArgoCD:
    """The lab's ArgoCD: where its Applications live, its git repository, the lab overlay."""

    namespace: str
    repository: Path
    apps_overlay: Path


@pytest.fixture(scope="session")
def argocd(kube_api: Any) -> ArgoCD:
    """Skipped on a laptop without the lab's ArgoCD, failed under CI."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    names = ("NAMESPACE", "REPO", "APPS", "HEALTH")
    env = {n: os.environ.get(f"MANIFEST_TEST_ARGOCD_{n}", "") for n in names}
    if not all(env.values()):
        missing("MANIFEST_TEST_ARGOCD_* are not set (run `python3 lab/lab.py argocd-up`)")
    try:
        client.CustomObjectsApi(kube_api).list_namespaced_custom_object(
            GROUP, VERSION, env["NAMESPACE"], "applications", _request_timeout=5
        )
    except ApiException as exc:
        missing(f"no ArgoCD Applications API on the lab cluster ({exc.status} {exc.reason})")
    try:
        with urllib.request.urlopen(env["HEALTH"], timeout=5) as answer:
            assert answer.status == 200
    except OSError as exc:
        missing(f"ArgoCD's application-controller does not answer at {env['HEALTH']}: {exc}")
    return ArgoCD(
        namespace=env["NAMESPACE"],
        repository=Path(env["REPO"]),
        apps_overlay=Path(env["APPS"]),
    )


def git(work: Path, *args: str) -> str:
    identity = ["-c", "user.name=manifest-e2e", "-c", "user.email=e2e@manifest.invalid"]
    done = subprocess.run(
        ["git", *identity, *args], cwd=work, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


@dataclass
class GitOps:
    """One Application of ours, its git working copy, and the namespace it deploys into."""

    argocd: ArgoCD
    lab: Lab
    custom: Any  # kubernetes.client.CustomObjectsApi
    work: Path
    branch: str
    image: str  # repository of the app image in git (the pipeline pushes there too)
    application: Manifest
    project: Manifest

    @property
    def namespace(self) -> str:
        return self.lab.namespace

    @property
    def name(self) -> str:
        return str(self.application["metadata"]["name"])

    def commit(self, message: str, edit: Callable[[Path], None]) -> str:
        """Edit the working copy, commit, push to the Application's branch; the new sha."""
        edit(self.work)
        git(self.work, "commit", "-q", "-am", message)
        git(self.work, "push", "-q", str(self.argocd.repository), f"HEAD:refs/heads/{self.branch}")
        return git(self.work, "rev-parse", "HEAD")

    def app(self, name: str | None = None) -> dict[str, Any]:
        found: dict[str, Any] = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.argocd.namespace, "applications", name or self.name
        )
        return found

    def patch_app(self, body: dict[str, Any], name: str | None = None) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.argocd.namespace, "applications", name or self.name, body
        )

    def refresh(self, kind: str = "normal") -> None:
        """What ArgoCD's UI, CLI and git webhooks do: ask for a comparison now."""
        self.patch_app({"metadata": {"annotations": {REFRESH: kind}}})

    def sync(self, *, prune: bool) -> None:
        """Start a sync operation as `argocd app sync` does (its API server copies the
        Application's syncOptions into the operation when the request names none)."""
        app = self.app()
        started = (app.get("status", {}).get("operationState") or {}).get("startedAt")
        options = app["spec"]["syncPolicy"].get("syncOptions", [])
        self.patch_app(
            {
                "operation": {
                    "initiatedBy": {"username": "e2e"},
                    "sync": {"revision": self.branch, "prune": prune, "syncOptions": options},
                }
            }
        )

        def finished() -> bool:
            state = self.app().get("status", {}).get("operationState") or {}
            return state.get("startedAt") != started and state.get("phase") in (
                "Succeeded",
                "Failed",
                "Error",
            )

        self.wait(finished, timeout=120, what="the sync operation to finish")
        state = self.app()["status"]["operationState"]
        assert state["phase"] == "Succeeded", state

    def wait(self, check: Callable[[], bool], *, timeout: float, what: str) -> None:
        try:
            wait_until(check, timeout=timeout, what=what, interval=1)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.explain()}") from None

    def explain(self) -> str:
        """The Application as `inv doctor` sees it, its last operation and resources."""
        from ops.argocd import summarize

        try:
            app = self.app()
        except Exception as exc:
            return f"(Application unreadable: {exc})"
        status = app.get("status", {})
        operation = status.get("operationState") or {}
        resources = [
            f"{r.get('kind')}/{r.get('name')}: {r.get('status')} {r.get('health')}"
            for r in status.get("resources", [])
        ]
        return "\n".join(
            [
                summarize(app).describe(),
                f"last operation {operation.get('phase')}: {operation.get('message')}",
                *resources,
            ]
        )

    def synced(self, revision: str) -> bool:
        """Synced to `revision`, every workload Healthy (the HPA may be Degraded where the
        cluster has no metrics API: that is the HPA's health, not the sync's)."""
        status = self.app().get("status", {})
        if status.get("sync", {}).get("status") != "Synced":
            return False
        if status.get("sync", {}).get("revision") != revision:
            return False
        workloads = [r for r in status.get("resources", []) if r.get("kind") in WORKLOADS]
        return len(workloads) == 3 and all(
            (r.get("health") or {}).get("status") == "Healthy" for r in workloads
        )

    def revision(self) -> str:
        return git(self.work, "rev-parse", "HEAD")

    def students(self) -> list[dict[str, Any]]:
        return sorted(self.lab.students(), key=lambda r: r["id"])


def lab_application(argocd: ArgoCD) -> tuple[Manifest, Manifest]:
    """manifest-development and its AppProject, as the lab overlay of k8s/argocd has them."""
    kustomize = find_kustomize()
    if kustomize is None:
        missing("kustomize not found (see tests/manifests/render.py)")
    rendered = render(kustomize, argocd.apps_overlay)
    app = find(rendered, "Application", "manifest-development")
    return app, find(rendered, "AppProject", app["spec"]["project"])


def point_at(app: Manifest, project: Manifest, namespace: str, branch: str) -> None:
    """Move the lab's Application and project to `namespace` (and the branch), nothing else."""
    app["metadata"]["name"] = project["metadata"]["name"] = namespace
    app["spec"]["project"] = namespace
    app["spec"]["destination"]["namespace"] = namespace
    app["spec"]["source"]["kustomize"] = {"namespace": namespace}
    app["spec"]["source"]["targetRevision"] = branch
    for destination in project["spec"]["destinations"]:
        destination["namespace"] = namespace


def set_overlay_image(work: Path, image: str, tag: str) -> None:
    """The test overlay runs `image:tag` instead of the registry's moving :latest."""
    path = work / "k8s" / "overlays" / "test" / "kustomization.yaml"
    kustomization = yaml.safe_load(path.read_text())
    kustomization.setdefault("images", []).append(
        {"name": APP_REPOSITORY, "newName": image, "newTag": tag}
    )
    path.write_text(yaml.safe_dump(kustomization, sort_keys=False))


def push(docker_client: Any, registry: Registry, source: str, repository: str, tag: str) -> None:
    docker_client.images.get(source).tag(repository, tag)
    errors = [
        chunk["error"]
        for chunk in docker_client.api.push(
            repository, tag=tag, stream=True, decode=True, auth_config=registry.auth_config()
        )
        if "error" in chunk
    ]
    assert errors == [], errors


def create(gitops: GitOps, plural: str, body: Manifest) -> None:
    gitops.custom.create_namespaced_custom_object(
        GROUP, VERSION, gitops.argocd.namespace, plural, body
    )


def delete_application(gitops: GitOps, name: str, *, cascade: bool) -> None:
    """Delete an Application; without cascade its objects stay (no ArgoCD finalizer)."""
    from kubernetes.client.exceptions import ApiException

    try:
        if not cascade:
            gitops.patch_app({"metadata": {"finalizers": None}}, name=name)
        gitops.custom.delete_namespaced_custom_object(
            GROUP, VERSION, gitops.argocd.namespace, "applications", name
        )
    except ApiException as exc:
        if exc.status != 404:
            raise


def application_gone(gitops: GitOps, name: str) -> bool:
    from kubernetes.client.exceptions import ApiException

    try:
        gitops.app(name)
    except ApiException as exc:
        if exc.status == 404:
            return True
        raise
    return False


@pytest.fixture(scope="module")
def gitops(
    tmp_path_factory: pytest.TempPathFactory,
    core_v1: Any,
    kube_context: str,
    registry: Registry,
    app_image: str,
    docker_client: Any,
    argocd: ArgoCD,
) -> Iterator[GitOps]:
    from kubernetes import client

    namespace = f"e2e-argocd-{uuid.uuid4().hex[:8]}"
    folder = tmp_path_factory.mktemp("argocd")
    lab = make_lab(folder, namespace, kube_context, registry, core_v1)
    image = f"{registry.host}/e2e/argocd-{namespace.rsplit('-', 1)[1]}"
    push(docker_client, registry, app_image, image, "seed")
    application, project = lab_application(argocd)
    branch = f"e2e/{namespace}"
    point_at(application, project, namespace, branch)
    work = folder / "git"
    work.mkdir()
    shutil.copytree(ROOT / "k8s", work / "k8s")
    set_overlay_image(work, image, "seed")
    git(work, "init", "-q", "--initial-branch", branch)
    git(work, "add", "-A")
    gitops = GitOps(
        argocd=argocd,
        lab=lab,
        custom=client.CustomObjectsApi(core_v1.api_client),
        work=work,
        branch=branch,
        image=image,
        application=application,
        project=project,
    )
    try:
        revision = gitops.commit("k8s/ of the checkout under test", lambda _: None)
        # The namespace and the Secrets first: `inv secrets.apply` is how they get there.
        core_v1.create_namespace(
            client.V1Namespace(
                metadata=client.V1ObjectMeta(name=namespace, labels={"manifest.test/e2e": "true"})
            )
        )
        wait_until(
            lambda: bool(
                core_v1.list_namespaced_service_account(
                    namespace, field_selector="metadata.name=default"
                ).items
            ),
            timeout=30,
            what="the default ServiceAccount",
        )
        applied = lab.inv("secrets.apply")
        assert applied.returncode == 0, applied.stdout + applied.stderr
        create(gitops, "appprojects", project)
        create(gitops, "applications", application)
        started = time.monotonic()
        gitops.wait(lambda: gitops.synced(revision), timeout=420, what="the first sync")
        seconds = time.monotonic() - started
        print(f"ArgoCD: first sync until every workload is Healthy in {seconds:.0f} s")
        for name, age in ROWS:
            service_call(core_v1, namespace, "POST", "api/student", {"name": name, "age": age})
        yield gitops
    finally:
        delete_application(gitops, namespace, cascade=False)
        delete_application(gitops, f"{namespace}-elsewhere", cascade=False)
        wait_until(lambda: application_gone(gitops, namespace), timeout=60, what="app deleted")
        gitops.custom.delete_namespaced_custom_object(
            GROUP, VERSION, argocd.namespace, "appprojects", namespace
        )
        forget_namespace(core_v1, namespace)
        git(work, "push", "-q", str(argocd.repository), f":refs/heads/{branch}")
        for tag in [t for i in docker_client.images.list() for t in i.tags if image in t]:
            docker_client.images.remove(tag, force=True)


def live(gitops: GitOps, kind: str, name: str) -> Any:
    from kubernetes.dynamic import DynamicClient

    dynamic = DynamicClient(gitops.lab.core_v1.api_client)
    api_version = {"Deployment": "apps/v1", "StatefulSet": "apps/v1"}.get(kind, "v1")
    if kind == "NetworkPolicy":
        api_version = "networking.k8s.io/v1"
    return dynamic.resources.get(api_version=api_version, kind=kind).get(
        name=name, namespace=gitops.namespace
    )


# --- the seed's GitOps workflow ------------------------------------------------------------


def test_argocd_synced_our_overlay_from_git(gitops: GitOps) -> None:
    """Every object of the test overlay, created by ArgoCD and tracked as the Application's;
    the app answers with the rows written through it."""
    kustomize = find_kustomize()
    assert kustomize is not None
    wanted = render(kustomize, gitops.work / "k8s" / "overlays" / "test")
    for obj in wanted:
        kind, name = obj["kind"], obj["metadata"]["name"]
        resource = {r["kind"] + "/" + r["name"]: r for r in gitops.app()["status"]["resources"]}
        assert f"{kind}/{name}" in resource, f"{kind}/{name} not in the Application's resources"
        assert resource[f"{kind}/{name}"]["namespace"] == gitops.namespace
    deployment = live(gitops, "Deployment", "manifest-app")
    tracking = deployment.metadata.annotations[TRACKING]
    assert tracking == f"{gitops.name}:apps/Deployment:{gitops.namespace}/manifest-app"
    assert deployment.spec.template.spec.containers[0].image == f"{gitops.image}:seed"
    assert [(r["name"], r["age"]) for r in gitops.students()] == list(ROWS)
    spec = gitops.app()["spec"]
    assert spec["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}


def test_a_commit_to_the_overlay_is_applied_by_argocd_alone(gitops: GitOps) -> None:
    """A ConfigMap value changed in git reaches the cluster by ArgoCD's own polling (the
    lab reconciles every 10 s; the seed's 3 min), no refresh asked, no kubectl."""
    marker = uuid.uuid4().hex

    def add_key(work: Path) -> None:
        path = work / "k8s" / "base" / "app-configmap.yaml"
        config = yaml.safe_load(path.read_text())
        config["data"]["e2e-commit"] = marker
        path.write_text(yaml.safe_dump(config, sort_keys=False))

    committed = time.monotonic()
    revision = gitops.commit("app-config: a new key", add_key)

    def applied() -> bool:
        data = gitops.lab.core_v1.read_namespaced_config_map("app-config", gitops.namespace).data
        return data.get("e2e-commit") == marker

    gitops.wait(applied, timeout=90, what="ArgoCD to apply the commit")
    print(f"ArgoCD: a commit reached the cluster in {time.monotonic() - committed:.0f} s")
    gitops.wait(lambda: gitops.synced(revision), timeout=60, what="Synced at the commit")


def test_manual_drift_is_healed(gitops: GitOps) -> None:
    """The seed's self-heal: a deleted NetworkPolicy and an edited ConfigMap are put back."""
    from kubernetes import client

    core_v1 = gitops.lab.core_v1
    networking = client.NetworkingV1Api(core_v1.api_client)
    before = networking.read_namespaced_network_policy("postgres", gitops.namespace)
    wanted = core_v1.read_namespaced_config_map("app-config", gitops.namespace).data

    networking.delete_namespaced_network_policy("postgres", gitops.namespace)
    core_v1.patch_namespaced_config_map(
        "app-config", gitops.namespace, {"data": {"database-name": "drifted"}}
    )

    def healed() -> bool:
        data = core_v1.read_namespaced_config_map("app-config", gitops.namespace).data
        policies = networking.list_namespaced_network_policy(
            gitops.namespace, field_selector="metadata.name=postgres"
        ).items
        return data == wanted and len(policies) == 1

    gitops.wait(healed, timeout=90, what="self-heal of the NetworkPolicy and the ConfigMap")
    again = networking.read_namespaced_network_policy("postgres", gitops.namespace)
    assert again.metadata.uid != before.metadata.uid  # made again, not left alone
    assert again.spec.to_dict() == before.spec.to_dict()


# --- our tasks beside ArgoCD ------------------------------------------------------------


def test_inv_pipeline_rollout_is_not_reverted_by_self_heal(
    gitops: GitOps, registry: Registry, docker_client: Any
) -> None:
    """The pipeline rolls out the digest it pushed; ArgoCD, refreshing hard and syncing
    again, keeps it (ignoreDifferences on the image, RespectIgnoreDifferences)."""
    from kubernetes import client

    base = os.environ.get("MANIFEST_TEST_PYTHON_IMAGE", "")
    if not base:
        missing("MANIFEST_TEST_PYTHON_IMAGE not set (source the lab env)")
    context = gitops.lab.folder / "app"
    if not context.exists():
        context.mkdir()
        copy_app_context(context)
    env = gitops.lab.env
    env.update(
        MANIFEST_BUILD_CONTEXT=str(context),
        MANIFEST_BASE_IMAGE=base,
        MANIFEST_IMAGE_REPOSITORY=gitops.image.split("/", 1)[1],
        MANIFEST_REGISTRY_USERNAME=registry.user,
        MANIFEST_REGISTRY_PASSWORD=registry.password,
    )
    apps = client.AppsV1Api(gitops.lab.core_v1.api_client)

    result = gitops.lab.inv("pipeline", timeout=900)

    assert result.returncode == 0, result.stdout + result.stderr
    rolled = apps.read_namespaced_deployment("manifest-app", gitops.namespace)
    image = rolled.spec.template.spec.containers[0].image
    assert image.startswith(f"{gitops.image}@sha256:"), image
    generation = rolled.metadata.generation
    # ArgoCD looks again (hard: manifests regenerated from git) and syncs once more.
    reconciled = gitops.app()["status"].get("reconciledAt")
    gitops.refresh("hard")
    gitops.wait(
        lambda: (
            gitops.app()["status"].get("reconciledAt") != reconciled
            and REFRESH not in (gitops.app()["metadata"].get("annotations") or {})
        ),
        timeout=60,
        what="the hard refresh",
    )
    assert gitops.app()["status"]["sync"]["status"] == "Synced", gitops.explain()
    gitops.sync(prune=False)
    time.sleep(12)  # at least one more reconciliation (every 10 s in the lab)
    after = apps.read_namespaced_deployment("manifest-app", gitops.namespace)
    assert after.spec.template.spec.containers[0].image == image
    assert after.metadata.generation == generation  # nobody wrote the template since
    assert gitops.app()["status"]["sync"]["status"] == "Synced", gitops.explain()
    gitops.wait(lambda: gitops.synced(gitops.revision()), timeout=180, what="healthy again")


def test_secrets_from_inv_secrets_apply_are_not_pruned(gitops: GitOps) -> None:
    """db-credentials and harbor-regcred are not in git and not ArgoCD's: a pruning sync
    leaves them, and the project would not let ArgoCD touch a Secret anyway."""
    core_v1 = gitops.lab.core_v1
    names = ("db-credentials", "harbor-regcred")
    before = {n: core_v1.read_namespaced_secret(n, gitops.namespace) for n in names}
    for secret in before.values():
        assert TRACKING not in (secret.metadata.annotations or {})

    gitops.sync(prune=True)

    for name, secret in before.items():
        now = core_v1.read_namespaced_secret(name, gitops.namespace)
        assert now.metadata.uid == secret.metadata.uid
        assert now.data == secret.data
    kinds = {r["kind"] for r in gitops.app()["status"]["resources"]}
    assert "Secret" not in kinds
    whitelist = {g["kind"] for g in gitops.project["spec"]["namespaceResourceWhitelist"]}
    assert "Secret" not in whitelist


def test_inv_deploy_applies_nothing_where_argocd_tracks_the_objects(gitops: GitOps) -> None:
    result = gitops.lab.inv("deploy")

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Application {gitops.name} manages" in result.stdout, result.stdout
    assert "deploy applies nothing there" in result.stdout + result.stderr


def test_inv_doctor_shows_the_applications_sync_and_health(gitops: GitOps) -> None:
    status = gitops.app()["status"]
    sync, health = status["sync"]["status"], status["health"]["status"]

    result = gitops.lab.inv("doctor")

    line = next((x for x in result.stdout.splitlines() if "ArgoCD" in x), "")
    expected = f"Application {gitops.name}: {sync}, {health} at {status['sync']['revision'][:7]}"
    assert expected in line, result.stdout
    healthy = health in ("Healthy", "Progressing")
    assert line.startswith("✓" if healthy else "✗"), result.stdout
    if not healthy:  # e.g. the HPA without a metrics API: the line says which resource
        assert "resource HorizontalPodAutoscaler/manifest-app" in line, result.stdout
    assert "Traceback" not in result.stderr


# --- the seed's disaster-recovery row "App deleted (ArgoCD)" ----------------------------------


def test_dr_app_deleted_keeps_the_data_and_a_sync_brings_it_back(gitops: GitOps) -> None:
    """Deleted with ArgoCD's cascading finalizer (its objects deleted too), except the two
    volumes (Prune=false,Delete=false); the Application made again syncs them back in use."""
    from kubernetes import client

    core_v1 = gitops.lab.core_v1
    apps = client.AppsV1Api(core_v1.api_client)
    rows = gitops.students()
    claims = {
        n: core_v1.read_namespaced_persistent_volume_claim(n, gitops.namespace) for n in VOLUMES
    }
    gitops.patch_app({"metadata": {"finalizers": [CASCADE]}})

    deleted = time.monotonic()
    delete_application(gitops, gitops.name, cascade=True)
    gitops.wait(lambda: application_gone(gitops, gitops.name), timeout=180, what="app deleted")

    assert apps.list_namespaced_deployment(gitops.namespace).items == []
    assert apps.list_namespaced_stateful_set(gitops.namespace).items == []
    assert core_v1.list_namespaced_service(gitops.namespace).items == []
    for name, claim in claims.items():
        kept = core_v1.read_namespaced_persistent_volume_claim(name, gitops.namespace)
        assert kept.metadata.uid == claim.metadata.uid, name
        assert kept.metadata.deletion_timestamp is None, name
        assert kept.status.phase == "Bound", name
    secrets = {s.metadata.name for s in core_v1.list_namespaced_secret(gitops.namespace).items}
    assert {"db-credentials", "harbor-regcred"} <= secrets
    started = time.monotonic()

    application = yaml.safe_load(yaml.safe_dump(gitops.application))
    create(gitops, "applications", application)
    gitops.wait(lambda: gitops.synced(gitops.revision()), timeout=420, what="synced back")

    def same_rows() -> bool:
        try:
            return gitops.students() == rows
        except Exception:  # the Service answers 503 until a pod is ready
            return False

    wait_until(same_rows, timeout=180, what="every row back", interval=2)
    ended = time.monotonic()
    for name, claim in claims.items():
        again = core_v1.read_namespaced_persistent_volume_claim(name, gitops.namespace)
        assert again.metadata.uid == claim.metadata.uid, name
    print(f"ArgoCD: cascade delete took {started - deleted:.0f} s")
    report("App deleted (ArgoCD) → Application made again, synced", started, ended, "0 rows lost")


# --- ArgoCD's reach: the seed's RBAC row ---------------------------------------------------


def test_an_application_of_this_project_aimed_at_another_namespace_is_refused(
    gitops: GitOps,
) -> None:
    from kubernetes.client.exceptions import ApiException

    name = f"{gitops.namespace}-elsewhere"
    elsewhere = yaml.safe_load(yaml.safe_dump(gitops.application))
    elsewhere["metadata"] = {"name": name, "namespace": gitops.argocd.namespace}
    elsewhere["spec"]["destination"]["namespace"] = name
    elsewhere["spec"]["source"]["kustomize"] = {"namespace": name}

    create(gitops, "applications", elsewhere)

    def refused() -> bool:
        conditions = gitops.app(name).get("status", {}).get("conditions", [])
        return any(c["type"] == "InvalidSpecError" for c in conditions)

    gitops.wait(refused, timeout=60, what="ArgoCD to refuse the destination")
    conditions = gitops.app(name)["status"]["conditions"]
    message = next(c["message"] for c in conditions if c["type"] == "InvalidSpecError")
    assert (
        f"namespace '{name}' do not match any of the allowed destinations in project "
        f"'{gitops.name}'" in message
    ), message
    time.sleep(12)  # one more reconciliation: still nothing
    with pytest.raises(ApiException) as exc:
        gitops.lab.core_v1.read_namespace(name)  # CreateNamespace=true did not run
    assert exc.value.status == 404
    assert gitops.app(name).get("status", {}).get("sync", {}).get("status") != "Synced"
    delete_application(gitops, name, cascade=False)


def test_a_kind_outside_the_projects_whitelist_is_refused(gitops: GitOps) -> None:
    """A ServiceAccount committed to the overlay (not a kind of ours) is not created, and
    the Application says why; reverting the commit brings it back to Synced."""
    from kubernetes.client.exceptions import ApiException

    def add_service_account(work: Path) -> None:
        base = work / "k8s" / "base"
        (base / "e2e-service-account.yaml").write_text(
            "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: e2e-not-ours\n"
        )
        kustomization = yaml.safe_load((base / "kustomization.yaml").read_text())
        kustomization["resources"].append("e2e-service-account.yaml")
        (base / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))
        git(work, "add", "k8s/base/e2e-service-account.yaml")

    gitops.commit("a ServiceAccount", add_service_account)
    gitops.refresh()

    def refused() -> bool:
        operation = gitops.app().get("status", {}).get("operationState") or {}
        said = [
            r.get("message", "") for r in (operation.get("syncResult") or {}).get("resources", [])
        ]
        return any(f":ServiceAccount is not permitted in project {gitops.name}" in m for m in said)

    gitops.wait(refused, timeout=90, what="ArgoCD to refuse the ServiceAccount")
    # The auto-sync retries (limit 5, backoff up to 3 min): end it, as `argocd app
    # terminate-op` does, so that the revert below is synced at once.
    gitops.patch_app({"status": {"operationState": {"phase": "Terminating"}}})
    gitops.wait(
        lambda: (
            "operation" not in gitops.app()
            and gitops.app()["status"]["operationState"]["phase"] != "Running"
        ),
        timeout=60,
        what="the operation terminated",
    )
    with pytest.raises(ApiException) as exc:
        gitops.lab.core_v1.read_namespaced_service_account("e2e-not-ours", gitops.namespace)
    assert exc.value.status == 404

    git(gitops.work, "revert", "--no-edit", "HEAD")
    git(
        gitops.work, "push", "-q", str(gitops.argocd.repository), f"HEAD:refs/heads/{gitops.branch}"
    )
    gitops.refresh()
    gitops.wait(lambda: gitops.synced(gitops.revision()), timeout=120, what="Synced again")
