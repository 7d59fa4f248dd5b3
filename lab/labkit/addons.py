"""The seed's traffic path on the lab: an ingress controller, the metrics API, NetworkPolicies.

Three parts, built from the Go module proxy like the rest of the lab (lab/go/<name>, cached
by build.GoBuild's key), run as **host processes** beside kube-proxy and the control plane:

- metrics-server v0.8.0 behind the kube-apiserver's aggregation layer (APIService
  v1beta1.metrics.k8s.io -> Service kube-system/metrics-server -> an Endpoints object naming
  this machine, --enable-aggregator-routing). It scrapes the kubelet's /metrics/resource.
- Traefik v3.6.12 with its `kubernetesIngressNginx` provider: serves Ingresses of class
  `nginx` (IngressClass controller `k8s.io/ingress-nginx`) on http://localhost:30880.
  ingress-nginx itself cannot run here (its Lua libraries are not in Debian).
- kube-router v2.1.0, firewall only: enforces NetworkPolicies with iptables and ipset on
  the pods of the lab's bridge. Started after the lab's LAB-FORWARD rule so its own FORWARD
  rule sits in front of it.

Why host processes, not pods: the lab's node is this machine and every other node-level part
(kubelet, kube-proxy) already runs here, logged and stopped the same way; a pod would need
an image built and imported for each, and kube-router a privileged hostNetwork pod anyway.
Each still talks to the API as its own RBAC subject (a client certificate or a
ServiceAccount token), never as the admin. What that leaves unproved: their in-cluster
manifests (Deployments, DaemonSet, ServiceAccounts mounted into pods).
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

from . import build, pki
from .build import GoBuild
from .util import (
    LabError,
    Paths,
    daemon_pid,
    info,
    output,
    read_env,
    run,
    start_daemon,
    stop_daemon,
    update_env,
    wait_for,
    write,
    write_json,
)

METRICS_SERVER = "metrics-server"
TRAEFIK = "traefik"
KUBE_ROUTER = "kube-router"
DAEMONS = (KUBE_ROUTER, METRICS_SERVER, TRAEFIK)

METRICS_PORT = 4443  # metrics-server's secure port, on the node's address
INGRESS_PORT = 30880  # Traefik's `web` entry point, on 127.0.0.1 (clear of 30002 and NodePorts)
INGRESS_URL = f"http://localhost:{INGRESS_PORT}"
INGRESS_CLASS = "nginx"
INGRESS_CONTROLLER = "k8s.io/ingress-nginx"
APISERVICE = "v1beta1.metrics.k8s.io"
SERVICE_CIDR = "10.96.0.0/16"
# Names kube-router's firewall gives its ipsets (iptables chains are KUBE-*, which the
# cluster's own cleanup already removes).
IPSET_PREFIXES = ("KUBE-", "kube-router-")


def _version_flag(package: str, variable: str, build_name: str, module: str) -> str:
    pinned = GoBuild(name=build_name, packages=(), binaries=()).pinned(module)
    return f"-X {package}.{variable}={pinned}"


def enabled() -> tuple[str, ...]:
    """The parts this lab runs: all three unless MANIFEST_LAB_ADDONS names fewer
    (comma-separated; empty for none)."""
    import os

    wanted = os.environ.get("MANIFEST_LAB_ADDONS", ",".join(DAEMONS))
    names = tuple(n.strip() for n in wanted.split(",") if n.strip())
    unknown = [n for n in names if n not in DAEMONS]
    if unknown:
        raise LabError(f"MANIFEST_LAB_ADDONS names {unknown}: choose from {', '.join(DAEMONS)}")
    return names


def builds() -> tuple[GoBuild, ...]:
    """The pinned builds of the enabled parts; the version each reports is the pinned one."""
    return tuple(b for b in _all_builds() if b.name in enabled())


def _all_builds() -> tuple[GoBuild, ...]:
    return (
        GoBuild(
            name=METRICS_SERVER,
            packages=("sigs.k8s.io/metrics-server/cmd/metrics-server",),
            binaries=(METRICS_SERVER,),
            ldflags=_version_flag(
                "k8s.io/client-go/pkg/version", "gitVersion", METRICS_SERVER,
                "sigs.k8s.io/metrics-server",
            ),
        ),
        GoBuild(
            name=TRAEFIK,
            packages=("github.com/traefik/traefik/v3/cmd/traefik",),
            binaries=(TRAEFIK,),
            ldflags=_version_flag(
                "github.com/traefik/traefik/v3/pkg/version", "Version", TRAEFIK,
                "github.com/traefik/traefik/v3",
            ),
        ),
        GoBuild(
            name=KUBE_ROUTER,
            packages=("github.com/cloudnativelabs/kube-router/v2/cmd/kube-router",),
            binaries=(KUBE_ROUTER,),
            ldflags=_version_flag(
                "github.com/cloudnativelabs/kube-router/v2/pkg/version", "Version", KUBE_ROUTER,
                "github.com/cloudnativelabs/kube-router/v2",
            ),
        ),
    )  # fmt: skip


def build_all(paths: Paths) -> dict[str, Path]:
    """The three builds at once: each has long serial stretches (its largest packages, the
    link), so together they finish sooner than one after another on a cold cache."""
    from concurrent.futures import ThreadPoolExecutor

    go = build.go_binary()
    with ThreadPoolExecutor(max_workers=3) as pool:
        done = {b.name: pool.submit(build.build_one, paths, b, go) for b in builds()}
        return {name: future.result() / name for name, future in done.items()}


def binaries(paths: Paths) -> dict[str, Path]:
    go = build.go_binary()
    return {b.name: build.output_dir(paths, b, go) / b.binaries[0] for b in builds()}


# --- the API server's side: the aggregation layer ----------------------------------------


def apiserver_flags(pki_dir: Path) -> dict[str, object]:
    """kube-apiserver flags for the aggregation layer: a front-proxy CA of its own and the
    client certificate (CN front-proxy-client) the apiserver shows extension API servers."""
    ca = pki.ensure_ca(pki_dir, "front-proxy-ca", "manifest-lab front-proxy CA")
    client = pki.ensure_cert(
        pki_dir, "front-proxy-client", ca=ca, common_name="front-proxy-client", client=True
    )
    return {
        "requestheader-client-ca-file": ca[0],
        "requestheader-allowed-names": "front-proxy-client",
        "requestheader-username-headers": "X-Remote-User",
        "requestheader-group-headers": "X-Remote-Group",
        "requestheader-extra-headers-prefix": "X-Remote-Extra-",
        "proxy-client-cert-file": client[0],
        "proxy-client-key-file": client[1],
        # The apiserver dials the Endpoints' address (this machine), not the Service's
        # ClusterIP: the control plane runs outside the pod network.
        "enable-aggregator-routing": "true",
    }


# --- objects in the cluster -----------------------------------------------------------------


def _cluster_role(name: str, rules: list[dict[str, Any]], *, user: str = "",
                  service_account: str = "") -> list[dict[str, Any]]:  # fmt: skip
    subject = (
        {"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}
        if user
        else {"kind": "ServiceAccount", "name": service_account, "namespace": "kube-system"}
    )
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name},
            "rules": rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": name},
            "subjects": [subject],
        },
    ]  # fmt: skip


def _rule(groups: list[str], resources: list[str], verbs: list[str]) -> dict[str, Any]:
    return {"apiGroups": groups, "resources": resources, "verbs": verbs}


READ = ["get", "list", "watch"]


def manifests(ca: Path, node_ip: str, parts: tuple[str, ...]) -> list[dict[str, Any]]:
    """IngressClass, RBAC for the parts, the metrics APIService and its Service. Only for
    the parts that run: an APIService nobody serves would stall namespace deletion."""
    traefik: list[dict[str, Any]] = [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "IngressClass",
            "metadata": {"name": INGRESS_CLASS},
            "spec": {"controller": INGRESS_CONTROLLER},
        },
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": TRAEFIK, "namespace": "kube-system"}},
        {
            # A long-lived token for the host process (the tokens controller fills it).
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/service-account-token",
            "metadata": {"name": f"{TRAEFIK}-token", "namespace": "kube-system",
                         "annotations": {"kubernetes.io/service-account.name": TRAEFIK}},
        },
        # Traefik's own RBAC for this provider (docs/.../kubernetes-ingress-nginx-rbac.yml).
        *_cluster_role(
            "manifest-lab:traefik",
            [
                _rule([""], ["services", "secrets", "namespaces"], ["list", "watch"]),
                _rule([""], ["pods"], ["get"]),
                _rule(["discovery.k8s.io"], ["endpointslices"], ["list", "watch"]),
                _rule(["networking.k8s.io"], ["ingresses", "ingressclasses"], ["list", "watch"]),
                _rule(["networking.k8s.io"], ["ingresses/status"], ["update"]),
            ],
            service_account=TRAEFIK,
        ),
    ]  # fmt: skip
    metrics: list[dict[str, Any]] = [
        # metrics-server: scrape kubelets, list what it reports on.
        *_cluster_role(
            "manifest-lab:metrics-server",
            [
                _rule([""], ["nodes/metrics"], ["get"]),
                _rule([""], ["pods", "nodes"], READ),
            ],
            user="system:metrics-server",
        ),
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "manifest-lab:metrics-server:auth-delegator"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "system:auth-delegator"},
            "subjects": [{"kind": "User", "name": "system:metrics-server",
                          "apiGroup": "rbac.authorization.k8s.io"}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "manifest-lab:metrics-server:auth-reader",
                         "namespace": "kube-system"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                        "name": "extension-apiserver-authentication-reader"},
            "subjects": [{"kind": "User", "name": "system:metrics-server",
                          "apiGroup": "rbac.authorization.k8s.io"}],
        },
        {
            # `kubectl top` and the HPA read it; view/edit/admin see it too (upstream's
            # system:aggregated-metrics-reader).
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "system:aggregated-metrics-reader", "labels": {
                "rbac.authorization.k8s.io/aggregate-to-view": "true",
                "rbac.authorization.k8s.io/aggregate-to-edit": "true",
                "rbac.authorization.k8s.io/aggregate-to-admin": "true",
            }},
            "rules": [_rule(["metrics.k8s.io"], ["pods", "nodes"], READ)],
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": METRICS_SERVER, "namespace": "kube-system"},
            "spec": {"ports": [{"name": "https", "port": 443, "targetPort": METRICS_PORT}]},
        },
        {
            # No selector: the Service's one endpoint is the host process.
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {"name": METRICS_SERVER, "namespace": "kube-system"},
            "subsets": [{"addresses": [{"ip": node_ip}],
                         "ports": [{"name": "https", "port": METRICS_PORT}]}],
        },
        {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": APISERVICE},
            "spec": {
                "group": "metrics.k8s.io",
                "version": "v1beta1",
                "groupPriorityMinimum": 100,
                "versionPriority": 100,
                "service": {"name": METRICS_SERVER, "namespace": "kube-system", "port": 443},
                "caBundle": base64.b64encode(ca.read_bytes()).decode(),
            },
        },
    ]  # fmt: skip
    # kube-router's firewall (daemonset/generic-kuberouter.yaml, minus the router's
    # leases and services/status).
    router = _cluster_role(
            "manifest-lab:kube-router",
            [
                _rule([""], ["namespaces", "pods", "services", "nodes", "endpoints"], READ),
                _rule(["networking.k8s.io"], ["networkpolicies"], READ),
                _rule(["discovery.k8s.io"], ["endpointslices"], READ),
            ],
            user="system:kube-router",
        )  # fmt: skip
    by_part = {TRAEFIK: traefik, METRICS_SERVER: metrics, KUBE_ROUTER: router}
    return [item for part in parts for item in by_part[part]]


# --- up ---------------------------------------------------------------------------------------


def _kubectl(paths: Paths, *args: str | Path, **kwargs: Any) -> Any:
    kubectl = build.bin_dirs(paths)["kubectl"]
    return run([kubectl, "--kubeconfig", paths.kubeconfig, *args], **kwargs)


def _kubeconfig(path: Path, *, user: str, cert: tuple[Path, Path], ca: Path) -> Path:
    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    return write_json(
        path,
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "lab", "cluster": {
                "server": "https://127.0.0.1:6443", "certificate-authority-data": b64(ca)}}],
            "users": [{"name": user, "user": {
                "client-certificate-data": b64(cert[0]), "client-key-data": b64(cert[1])}}],
            "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": user}}],
            "current-context": "lab",
        },
        mode=0o600,
    )  # fmt: skip


def _rotate_logs(paths: Paths) -> None:
    for name in DAEMONS:
        log = paths.logs / f"{name}.log"
        if log.exists():
            log.replace(log.with_name(f"{name}.log.1"))


def _token(paths: Paths) -> str:
    proc = _kubectl(
        paths, "-n", "kube-system", "get", "secret", f"{TRAEFIK}-token",
        "-o", "jsonpath={.data.token}", capture=True, quiet=True, check=False,
    )  # fmt: skip
    return base64.b64decode(proc.stdout).decode() if proc.returncode == 0 else ""


def up(paths: Paths, *, cluster_dir: Path, ca: tuple[Path, Path], node_ip: str,
       node_name: str) -> None:  # fmt: skip
    """Start kube-router, metrics-server and Traefik against a running cluster."""
    bins = binaries(paths)
    missing = [name for name, path in bins.items() if not path.exists()]
    if missing:
        raise LabError(f"binaries {missing} are not built: run `lab.py build`")
    started = time.monotonic()
    parts = enabled()
    _rotate_logs(paths)
    d = cluster_dir / "addons"
    d.mkdir(parents=True, exist_ok=True)
    objects = write_json(
        d / "addons.json",
        {"apiVersion": "v1", "kind": "List", "items": manifests(ca[0], node_ip, parts)},
    )
    _kubectl(paths, "apply", "-f", objects, capture=True)
    if KUBE_ROUTER in parts:
        _start_kube_router(paths, d, ca=ca, node_name=node_name)
    if METRICS_SERVER in parts:
        _start_metrics_server(paths, d, ca=ca, node_ip=node_ip)
    if TRAEFIK in parts:
        _start_traefik(paths, d, ca=ca)
    if KUBE_ROUTER in parts:
        wait_for("kube-router's firewall chains", _router_ready, 60)
    if METRICS_SERVER in parts:
        _kubectl(paths, "wait", "--for=condition=Available", f"apiservice/{APISERVICE}",
                 "--timeout=120s", capture=True)  # fmt: skip
    info(f"{', '.join(parts) or 'no traffic parts'} up after {time.monotonic() - started:.0f}s")


def _start_kube_router(paths: Paths, d: Path, *, ca: tuple[Path, Path], node_name: str) -> None:
    # kube-router: after cluster.up's LAB-FORWARD rule, so its FORWARD rule comes first.
    router_cert = pki.ensure_cert(d.parent / "pki", KUBE_ROUTER, ca=ca,
                                  common_name="system:kube-router", client=True)  # fmt: skip
    start_daemon(paths, KUBE_ROUTER, [
        binaries(paths)[KUBE_ROUTER],
        f"--kubeconfig={_kubeconfig(d / 'kube-router.kubeconfig', user='system:kube-router', cert=router_cert, ca=ca[0])}",  # noqa: E501
        "--run-firewall=true", "--run-router=false", "--run-service-proxy=false",
        "--enable-cni=false",
        f"--hostname-override={node_name}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--health-port=20244",
        "--metrics-port=0",
    ])  # fmt: skip


def _start_metrics_server(paths: Paths, d: Path, *, ca: tuple[Path, Path], node_ip: str) -> None:
    # Serving cert for the name the aggregator checks, client cert for the API and the
    # kubelet (both trust the lab CA).
    pki_dir = d.parent / "pki"
    serving = pki.ensure_cert(
        pki_dir, "metrics-server-serving", ca=ca, common_name="metrics-server",
        server=True, dns=["metrics-server.kube-system.svc"], ips=[node_ip],
    )  # fmt: skip
    ms_cert = pki.ensure_cert(pki_dir, "metrics-server-client", ca=ca,
                              common_name="system:metrics-server", client=True)  # fmt: skip
    ms_kubeconfig = _kubeconfig(d / "metrics-server.kubeconfig", user="system:metrics-server",
                                cert=ms_cert, ca=ca[0])  # fmt: skip
    start_daemon(paths, METRICS_SERVER, [
        binaries(paths)[METRICS_SERVER],
        f"--bind-address={node_ip}",
        f"--secure-port={METRICS_PORT}",
        f"--tls-cert-file={serving[0]}",
        f"--tls-private-key-file={serving[1]}",
        f"--kubeconfig={ms_kubeconfig}",
        f"--authentication-kubeconfig={ms_kubeconfig}",
        f"--authorization-kubeconfig={ms_kubeconfig}",
        "--kubelet-preferred-address-types=InternalIP",
        f"--kubelet-certificate-authority={ca[0]}",
        "--kubelet-use-node-status-port",
        # The HPA test needs figures soon after load starts; upstream's chart uses 15 s too.
        "--metric-resolution=15s",
    ])  # fmt: skip


def _start_traefik(paths: Paths, d: Path, *, ca: tuple[Path, Path]) -> None:
    wait_for("the token of ServiceAccount kube-system/traefik", lambda: bool(_token(paths)), 60)
    token = write(d / "traefik.token", _token(paths), mode=0o600)
    start_daemon(paths, TRAEFIK, [
        binaries(paths)[TRAEFIK],
        "--global.checknewversion=false",
        "--global.sendanonymoususage=false",
        "--log.level=INFO",
        "--accesslog=true",
        f"--entrypoints.web.address=127.0.0.1:{INGRESS_PORT}",
        "--providers.kubernetesingressnginx=true",
        "--providers.kubernetesingressnginx.endpoint=https://127.0.0.1:6443",
        f"--providers.kubernetesingressnginx.token={token}",
        f"--providers.kubernetesingressnginx.certauthfilepath={ca[0]}",
        f"--providers.kubernetesingressnginx.ingressclass={INGRESS_CLASS}",
        f"--providers.kubernetesingressnginx.controllerclass={INGRESS_CONTROLLER}",
        # What `inv doctor` and `kubectl get ingress` show as the Ingress's address.
        "--providers.kubernetesingressnginx.publishstatusaddress=127.0.0.1",
    ])  # fmt: skip

    wait_for(f"Traefik on {INGRESS_URL}", lambda: _http_code(INGRESS_URL + "/") == 404, 60)
    update_env(paths, {"MANIFEST_LAB_INGRESS_URL": INGRESS_URL})


def _http_code(url: str) -> int:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def _router_ready() -> bool:
    rules = output(["iptables", "-w", "-S", "FORWARD"], check=False)
    first = next((r for r in rules.splitlines() if r.startswith("-A FORWARD")), "")
    return "KUBE-ROUTER-FORWARD" in first


# --- down -------------------------------------------------------------------------------------


def stop(paths: Paths) -> None:
    """Stop the three processes (the ingress first: it holds client connections)."""
    for name in (TRAEFIK, METRICS_SERVER, KUBE_ROUTER):
        stop_daemon(paths, name)


def host_cleanup() -> None:
    """kube-router's ipsets; run after the KUBE-* iptables chains that use them are gone."""
    names = output(["ipset", "list", "-n"], check=False) if _has_ipset() else ""
    for name in names.split():
        if name.startswith(IPSET_PREFIXES):
            run(["ipset", "destroy", name], check=False, quiet=True, capture=True)
    left = leftovers()
    if left:
        raise LabError(f"kube-router left rules or ipsets behind: {left[:5]}")


def _has_ipset() -> bool:
    import shutil

    return shutil.which("ipset") is not None


def leftovers() -> list[str]:
    """What a down must leave nothing of: kube-router's rules and ipsets."""
    found = [r for r in output(["iptables-save"], check=False).splitlines() if "KUBE-ROUTER" in r]
    if _has_ipset():
        found += [n for n in output(["ipset", "list", "-n"], check=False).split()
                  if n.startswith(IPSET_PREFIXES)]  # fmt: skip
    return found


def status(paths: Paths) -> None:
    for name in DAEMONS:
        pid = daemon_pid(paths, name)
        print(f"{name:<24} {'running, pid ' + str(pid) if pid else 'stopped'}")
    if daemon_pid(paths, TRAEFIK):
        print(f"{'ingress':<24} {read_env(paths).get('MANIFEST_LAB_INGRESS_URL', INGRESS_URL)} "
              f"(class {INGRESS_CLASS}, Traefik)")  # fmt: skip
    if daemon_pid(paths, "kube-apiserver") and paths.kubeconfig.exists():
        proc = _kubectl(paths, "get", "apiservice", APISERVICE, "-o", "json",
                        capture=True, quiet=True, check=False)  # fmt: skip
        available = "missing"
        if proc.returncode == 0:
            conditions = json.loads(proc.stdout).get("status", {}).get("conditions", [])
            available = next(
                (f"Available={c['status']}" for c in conditions if c["type"] == "Available"),
                "no status",
            )
        print(f"{'metrics API':<24} {APISERVICE} {available}")
