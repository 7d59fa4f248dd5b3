"""ArgoCD (pinned in lab/go/argocd) as host processes, the way upstream's Procfile runs it.

One binary, `ARGOCD_BINARY_NAME` picks the component; `ARGOCD_FAKE_IN_CLUSTER=true` makes
the in-cluster destination https://kubernetes.default.svc the lab's kubeconfig. Only what
syncing needs runs: Debian's redis-server (ArgoCD's cache), the repo-server (git + the
pinned kustomize) and the application-controller. No API server, UI, Dex, ApplicationSet
or notifications controller: the tests and `inv doctor` read and write Applications through
the Kubernetes API.

In the cluster: the CRDs from the module's manifests/crds, namespace argocd, argocd-cm,
argocd-rbac-cm, argocd-cmd-params-cm (the same settings the processes get as flags),
argocd-secret with a random server.secretkey (never printed) and the default AppProject.

The repository: a bare git repository $LAB/argocd/git/manifest.git whose `main` is a
snapshot of this checkout's k8s/ (working tree, uncommitted changes included). The
Applications of k8s/argocd point at GitHub; $LAB/argocd/apps/kustomization.yaml is a lab
overlay of k8s/argocd whose patches rewrite repoURL (and the projects' sourceRepos) to that
repository and the development Application's path to k8s/overlays/test (the lab cannot pull
Docker Hub's postgres). `lab.py up` applies no Application: each e2e test makes its own.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import sys
import time
from pathlib import Path

from . import build
from .util import (
    LAB_SOURCE,
    LabError,
    Paths,
    daemon_pid,
    http_status,
    info,
    output,
    run,
    start_daemon,
    stop_daemon,
    update_env,
    wait_for,
    write,
    write_json,
)

NAMESPACE = "argocd"
MODULE = "github.com/argoproj/argo-cd/v3"
REDIS_PORT = 18379
REPO_SERVER_PORT = 18081
REPO_SERVER_METRICS_PORT = 18084
CONTROLLER_METRICS_PORT = 18082
COMPONENTS = ("argocd-redis", "argocd-repo-server", "argocd-application-controller")
CHECKOUT = LAB_SOURCE.parent
# The seed reconciles every 3 minutes; the lab every 10 s so that tests wait seconds.
RECONCILIATION_SECONDS = 10
CRDS = ("application-crd.yaml", "applicationset-crd.yaml", "appproject-crd.yaml")
GIT_IDENTITY = ("-c", "user.name=manifest-lab", "-c", "user.email=lab@manifest.invalid")


def _dir(paths: Paths) -> Path:
    return paths.lab / "argocd"


def git_repository(paths: Paths) -> Path:
    return _dir(paths) / "git" / "manifest.git"


def repo_url(paths: Paths) -> str:
    return f"file://{git_repository(paths)}"


def apps_overlay(paths: Paths) -> Path:
    return _dir(paths) / "apps"


def kustomize() -> Path:
    """The pinned kustomize (.ci/run builds it), which the repo-server runs."""
    candidates = [
        os.environ.get("MANIFEST_KUSTOMIZE", ""),
        str(Path.home() / ".cache" / "manifest" / "bin" / "kustomize"),
        shutil.which("kustomize") or "",
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise LabError(
        "ArgoCD's repo-server needs kustomize: build the pinned one with `GOBIN=~/.cache/"
        "manifest/bin go install sigs.k8s.io/kustomize/kustomize/v5@v5.7.1` (as .ci/run does)"
    )


def module_dir(paths: Paths) -> Path:
    """ArgoCD's module source (for its CRDs), from the lab's GOMODCACHE."""
    version = build.ARGOCD.pinned(MODULE)
    found = output(
        [build.go_binary(), "mod", "download", "-json", f"{MODULE}@{version}"],
        cwd=build.ARGOCD.module_dir,
        env=build.go_env(paths),
    )
    return Path(json.loads(found)["Dir"])


# --- settings: one table, as ConfigMaps for people and as flags for the processes -----------

# argocd-cmd-params-cm keys (upstream's Deployments turn them into env) -> our processes' flags.
CONTROLLER = "argocd-application-controller"
REPO_SERVER = "argocd-repo-server"
CMD_PARAMS: dict[str, tuple[str, str, str]] = {
    # key: (component or "*", flag, value)
    "redis.server": ("*", "redis", f"127.0.0.1:{REDIS_PORT}"),
    "repo.server": (CONTROLLER, "repo-server", f"127.0.0.1:{REPO_SERVER_PORT}"),
    "controller.repo.server.plaintext": (CONTROLLER, "repo-server-plaintext", "true"),
    # A 2-core machine: few workers are plenty for a handful of Applications.
    "controller.status.processors": (CONTROLLER, "status-processors", "4"),
    "controller.operation.processors": (CONTROLLER, "operation-processors", "4"),
    "controller.kubectl.parallelism.limit": (CONTROLLER, "kubectl-parallelism-limit", "4"),
    # v3 keeps resource health in redis only; the tests and `inv doctor` read it from the
    # Application's status.resources, as v2 wrote it.
    "controller.resource.health.persist": (CONTROLLER, "persist-resource-health", "true"),
    "reposerver.disable.tls": (REPO_SERVER, "disable-tls", "true"),
    "reposerver.parallelism.limit": (REPO_SERVER, "parallelismlimit", "2"),
}


def _flags(component: str) -> list[str]:
    return [
        f"--{flag}={value}" for comp, flag, value in CMD_PARAMS.values() if comp in ("*", component)
    ]


def _config_objects(secret_key: str) -> list[dict[str, object]]:
    def config_map(name: str, data: dict[str, str]) -> dict[str, object]:
        labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "argocd"}
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels},
            "data": data,
        }

    reconciliation = f"{RECONCILIATION_SECONDS}s"
    return [
        config_map(
            "argocd-cm",
            {
                # Upstream passes it as ARGOCD_RECONCILIATION_TIMEOUT; so do we (_env).
                "timeout.reconciliation": reconciliation,
                "timeout.reconciliation.jitter": "0s",
                "application.resourceTrackingMethod": "annotation",
                "admin.enabled": "false",
                "statusbadge.enabled": "false",
            },
        ),
        config_map("argocd-rbac-cm", {"policy.default": "role:readonly"}),
        config_map(
            "argocd-cmd-params-cm", {key: value for key, (_, _, value) in CMD_PARAMS.items()}
        ),
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "argocd-secret",
                "namespace": NAMESPACE,
                "labels": {
                    "app.kubernetes.io/name": "argocd-secret",
                    "app.kubernetes.io/part-of": "argocd",
                },
            },
            "type": "Opaque",
            "stringData": {"server.secretkey": secret_key},
        },
    ]


DEFAULT_PROJECT: dict[str, object] = {
    "apiVersion": "argoproj.io/v1alpha1",
    "kind": "AppProject",
    "metadata": {"name": "default", "namespace": NAMESPACE},
    "spec": {
        "sourceRepos": ["*"],
        "destinations": [{"namespace": "*", "server": "*"}],
        "clusterResourceWhitelist": [{"group": "*", "kind": "*"}],
    },
}


def _secret_key(paths: Paths) -> str:
    """argocd-secret's server.secretkey: random, made once per lab dir, never printed."""
    path = _dir(paths) / "server.secretkey"
    if not path.exists():
        write(path, secrets.token_urlsafe(32), mode=0o600)
    return path.read_text().strip()


# --- the lab's git repository and the lab overlay of k8s/argocd ------------------------------


def _git(*args: str | Path, cwd: Path | None = None) -> str:
    return output(["git", *GIT_IDENTITY, *args], cwd=cwd)


def publish_checkout(paths: Paths, branch: str = "main") -> str:
    """Commit this checkout's k8s/ (as it is on disk) to `branch` of the lab repository."""
    repo = git_repository(paths)
    if not (repo / "HEAD").exists():
        repo.parent.mkdir(parents=True, exist_ok=True)
        _git("init", "--quiet", "--bare", "--initial-branch=main", repo)
    work = _dir(paths) / "publish"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    shutil.copytree(CHECKOUT / "k8s", work / "k8s")
    head = "(not a git checkout)"
    if (CHECKOUT / ".git").exists():
        head = _git("-C", CHECKOUT, "rev-parse", "--short", "HEAD").strip()
        if _git("-C", CHECKOUT, "status", "--porcelain", "--", "k8s").strip():
            head += " with uncommitted changes"
    _git("init", "--quiet", "--initial-branch", branch, cwd=work)
    _git("add", "-A", cwd=work)
    _git("commit", "--quiet", "-m", f"k8s/ of {CHECKOUT} at {head}", cwd=work)
    _git("push", "--quiet", "--force", str(repo), f"HEAD:refs/heads/{branch}", cwd=work)
    sha = _git("rev-parse", "HEAD", cwd=work).strip()
    shutil.rmtree(work, ignore_errors=True)
    return sha


def _replace(path: str, value: object) -> str:
    return json.dumps([{"op": "replace", "path": path, "value": value}])


def write_apps_overlay(paths: Paths) -> Path:
    """$LAB/argocd/apps: k8s/argocd with repoURL, sourceRepos and the lab's overlay patched."""
    folder = apps_overlay(paths)
    url = repo_url(paths)
    delete = [
        {
            "target": {"group": "argoproj.io", "kind": kind, "name": f"manifest-{env}"},
            "patch": json.dumps(
                {
                    "apiVersion": "argoproj.io/v1alpha1",
                    "kind": kind,
                    "metadata": {"name": f"manifest-{env}", "namespace": NAMESPACE},
                    "$patch": "delete",
                }
            ),
        }
        for env in ("staging", "production")
        for kind in ("Application", "AppProject")
    ]
    write_json(
        folder / "kustomization.yaml",
        {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            # Written by lab/labkit/argocd.py (lab.py up); JSON is YAML.
            "resources": [os.path.relpath(CHECKOUT / "k8s" / "argocd", folder)],
            "patches": [
                {
                    "target": {"group": "argoproj.io", "kind": "Application"},
                    "patch": _replace("/spec/source/repoURL", url),
                },
                {
                    "target": {"group": "argoproj.io", "kind": "AppProject"},
                    "patch": _replace("/spec/sourceRepos", [url]),
                },
                {
                    "target": {
                        "group": "argoproj.io",
                        "kind": "Application",
                        "name": "manifest-development",
                    },
                    "patch": _replace("/spec/source/path", "k8s/overlays/test"),
                },
                *delete,
            ],
        },
    )
    return folder


# --- processes -------------------------------------------------------------------------------


def _kubectl(paths: Paths, *args: str | Path, **kwargs: object) -> None:
    kubectl = build.bin_dirs(paths)["kubectl"]
    run([kubectl, "--kubeconfig", paths.kubeconfig, *args], **kwargs)  # type: ignore[arg-type]


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _env(paths: Paths) -> dict[str, str]:
    d = _dir(paths)
    for sub in ("tls", "ssh", "gpg/keys", "gpg/source", "plugins", "tmp", "home"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    return {
        "ARGOCD_FAKE_IN_CLUSTER": "true",
        "KUBECONFIG": str(paths.kubeconfig),
        "ARGOCD_GPG_ENABLED": "false",
        "ARGOCD_TLS_DATA_PATH": str(d / "tls"),
        "ARGOCD_SSH_DATA_PATH": str(d / "ssh"),
        "ARGOCD_GNUPGHOME": str(d / "gpg" / "keys"),
        "ARGOCD_GPG_DATA_PATH": str(d / "gpg" / "source"),
        "ARGOCD_PLUGINSOCKFILEPATH": str(d / "plugins"),
        "TMPDIR": str(d / "tmp"),  # the repo-server's clones
        "HOME": str(d / "home"),  # no user's ~/.gitconfig
        "PATH": f"{kustomize().parent}{os.pathsep}{os.environ.get('PATH', '')}",
        # argocd-cm's timeout.reconciliation, as upstream's Deployments pass it: the
        # controller's --app-resync and the repo-server's revision cache (a new commit on a
        # branch is seen after at most this long) both default to it.
        "ARGOCD_RECONCILIATION_TIMEOUT": f"{RECONCILIATION_SECONDS}s",
    }


def up(paths: Paths) -> None:
    started = time.monotonic()
    binary = build.bin_dirs(paths)["argocd"]
    if not binary.exists():
        raise LabError(f"{binary} is not built: run `lab.py build`")
    if not paths.kubeconfig.exists():
        raise LabError("no cluster: run `lab.py cluster-up` first")
    env = _env(paths)
    down(paths)  # a restarted cluster has none of our objects: start from scratch
    for name in COMPONENTS:  # this run's logs; the previous run's as .1
        log = paths.logs / f"{name}.log"
        if log.exists():
            log.replace(log.with_name(f"{name}.log.1"))
    busy = [
        p
        for p in (REDIS_PORT, REPO_SERVER_PORT, REPO_SERVER_METRICS_PORT, CONTROLLER_METRICS_PORT)
        if _port_open(p)
    ]
    if busy:
        raise LabError(f"ports {busy} are in use: another lab's ArgoCD runs here")

    crds = module_dir(paths) / "manifests" / "crds"
    _kubectl(
        paths,
        "apply",
        "--server-side",
        "--force-conflicts",
        *(f"--filename={crds / c}" for c in CRDS),
        capture=True,
    )
    kubectl = [build.bin_dirs(paths)["kubectl"], "--kubeconfig", paths.kubeconfig]
    established = '{.status.conditions[?(@.type=="Established")].status}'

    def crds_established() -> bool:
        # `kubectl wait` fails outright while a new CRD has no conditions yet: poll instead.
        for crd in ("applications.argoproj.io", "appprojects.argoproj.io"):
            if output([*kubectl, "get", "crd", crd, "-o", f"jsonpath={established}"]) != "True":
                return False
        return True

    wait_for("ArgoCD's CRDs to be established", crds_established, 60)
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
    objects = [namespace, *_config_objects(_secret_key(paths)), DEFAULT_PROJECT]
    _kubectl(
        paths, "apply", "--server-side", "--force-conflicts", "-f", "-",
        input_bytes=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}).encode(),
        capture=True,
    )  # fmt: skip
    sha = publish_checkout(paths)
    info(f"lab git repository {repo_url(paths)}: main = k8s/ of {CHECKOUT} ({sha[:10]})")
    overlay = write_apps_overlay(paths)

    redis_dir = _dir(paths) / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True)
    start_daemon(
        paths,
        "argocd-redis",
        [
            "redis-server", "--port", str(REDIS_PORT), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", redis_dir,
            # Keep /proc/PID/cmdline as started, so that the lab finds it by its exe again.
            "--set-proc-title", "no",
        ],
    )  # fmt: skip
    wait_for("redis", lambda: _port_open(REDIS_PORT), 20)
    common = ["--loglevel=info", "--logformat=text", f"--namespace={NAMESPACE}"]
    start_daemon(
        paths,
        "argocd-repo-server",
        [
            binary, *common[:2], *_flags(REPO_SERVER),
            "--address=127.0.0.1", f"--port={REPO_SERVER_PORT}",
            "--metrics-address=127.0.0.1", f"--metrics-port={REPO_SERVER_METRICS_PORT}",
        ],
        env={**env, "ARGOCD_BINARY_NAME": REPO_SERVER},
        cwd=_dir(paths),
    )  # fmt: skip
    start_daemon(
        paths,
        "argocd-application-controller",
        [
            binary, *common, *_flags(CONTROLLER),
            f"--metrics-port={CONTROLLER_METRICS_PORT}", "--app-resync-jitter=0",
        ],
        env={**env, "ARGOCD_BINARY_NAME": CONTROLLER},
        cwd=_dir(paths),
    )  # fmt: skip
    wait_for("the ArgoCD repo-server", lambda: _port_open(REPO_SERVER_PORT), 60)
    health = f"http://127.0.0.1:{CONTROLLER_METRICS_PORT}/healthz"
    wait_for("the ArgoCD application-controller", lambda: http_status(health) == 200, 60)
    update_env(
        paths,
        {
            "MANIFEST_TEST_ARGOCD_NAMESPACE": NAMESPACE,
            "MANIFEST_TEST_ARGOCD_REPO": str(git_repository(paths)),
            "MANIFEST_TEST_ARGOCD_APPS": str(overlay),
            "MANIFEST_TEST_ARGOCD_HEALTH": health,
        },
    )
    info(f"ArgoCD {build.ARGOCD.pinned(MODULE)} ready after {time.monotonic() - started:.0f}s")
    info(f"lab overlay of k8s/argocd: {overlay} (kubectl apply -k it to sync development)")


def down(paths: Paths) -> None:
    for name in reversed(COMPONENTS):
        stop_daemon(paths, name)


def status(paths: Paths) -> None:
    for name in COMPONENTS:
        pid = daemon_pid(paths, name)
        print(f"{name:<30} {'running, pid ' + str(pid) if pid else 'stopped'}")
    if daemon_pid(paths, "argocd-application-controller") and paths.kubeconfig.exists():
        _kubectl(paths, "get", "applications,appprojects", "-A", check=False, quiet=True)
    print(f"git repository: {repo_url(paths)}  lab overlay: {apps_overlay(paths)}")


def dump_logs(paths: Paths, lines: int = 25) -> None:
    """The tail of each ArgoCD component's log (for a failed start in CI)."""
    for name in COMPONENTS:
        log = paths.logs / f"{name}.log"
        if log.exists():
            tail = log.read_bytes().decode(errors="replace").splitlines()[-lines:]
            print(f"----- {log} (last {len(tail)} lines)", file=sys.stderr)
            print("\n".join(tail), file=sys.stderr, flush=True)
