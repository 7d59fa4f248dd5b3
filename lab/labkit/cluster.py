"""A one-node Kubernetes cluster from the binaries `build` made.

Control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler)
and node (containerd with CRI, kubelet, kube-proxy) run as host processes under
$LAB/cluster; CoreDNS runs as a Deployment in kube-system from an image the
node imported. Every component logs to $LAB/logs/<name>.log.

Network: pods 10.244.0.0/24 on the bridge `lab0` (CNI bridge + host-local +
portmap), services 10.96.0.0/16, cluster DNS 10.96.0.10. Pod traffic may only
go to pods, services and this machine: a LAB-FORWARD chain drops the rest.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import addons, build, images, pki
from .services import docker_env
from .util import (
    LabError,
    Paths,
    daemon_pid,
    info,
    kill_pids,
    mounts_under,
    output,
    pids_matching,
    run,
    start_daemon,
    stop_daemon,
    unmount_under,
    update_env,
    wait_for,
    warn,
    write,
    write_json,
)

CONTEXT = "manifest-lab"
NODE = "manifest-lab-node"
API_PORT = 6443
POD_CIDR = "10.244.0.0/16"
NODE_POD_CIDR = "10.244.0.0/24"
SERVICE_CIDR = "10.96.0.0/16"
API_SERVICE_IP = "10.96.0.1"
DNS_IP = "10.96.0.10"
BRIDGE = "lab0"
CHAIN = "LAB-FORWARD"
CNI_MARK = "manifest-lab"  # the CNI network name, in the comments of its iptables rules
# NodePorts stay clear of 30002 (the registry) and of the rest of 30000-30999.
NODE_PORT_RANGE = "31000-32767"
HOSTPATH_PV_DIR = Path("/tmp/hostpath_pv")  # fixed by the controller-manager's hostpath provisioner
CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
NODE_DAEMONS = ("containerd", "kubelet", "kube-proxy")


def _dir(paths: Paths) -> Path:
    return paths.lab / "cluster"


def _containerd_sock(paths: Paths) -> Path:
    return _dir(paths) / "containerd" / "containerd.sock"


def node_ip() -> str:
    """This machine's primary IPv4 address (the apiserver's advertise address)."""
    text = output(["ip", "-4", "-o", "addr", "show", "scope", "global"])
    for line in text.splitlines():
        fields = line.split()
        if fields[1] not in {BRIDGE, "docker0"} and not fields[1].startswith(("veth", "cni")):
            return fields[3].split("/")[0]
    raise LabError("no global IPv4 address on this machine for the apiserver to advertise")


# --- certificates and kubeconfigs ---------------------------------------------


def _kubeconfig(path: Path, *, user: str, cert: tuple[Path, Path], ca: Path, server: str) -> Path:
    return write_json(
        path,
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": CONTEXT,
                    "cluster": {"server": server, "certificate-authority-data": _b64(ca)},
                }
            ],
            "users": [
                {
                    "name": user,
                    "user": {
                        "client-certificate-data": _b64(cert[0]),
                        "client-key-data": _b64(cert[1]),
                    },
                }
            ],
            "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": user}}],
            "current-context": CONTEXT,
        },
        mode=0o600,
    )


def _b64(path: Path) -> str:
    import base64

    return base64.b64encode(path.read_bytes()).decode()


def _pki(paths: Paths, ip: str) -> dict[str, Path]:
    d = _dir(paths) / "pki"
    ca = pki.ensure_ca(d, "ca", "manifest-lab kubernetes CA")
    server = f"https://127.0.0.1:{API_PORT}"
    apiserver = pki.ensure_cert(
        d,
        "apiserver",
        ca=ca,
        common_name="kube-apiserver",
        server=True,
        dns=[
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            NODE,
        ],
        ips=["127.0.0.1", ip, API_SERVICE_IP],
    )
    kubelet_client = pki.ensure_cert(
        d,
        "apiserver-kubelet-client",
        ca=ca,
        common_name="kube-apiserver-kubelet-client",
        organization="system:masters",
        client=True,
    )
    kubelet_serving = pki.ensure_cert(
        d,
        "kubelet-serving",
        ca=ca,
        common_name=NODE,
        server=True,
        dns=[NODE, "localhost"],
        ips=[ip, "127.0.0.1"],
    )
    sa_key, sa_pub = pki.ensure_keypair(d, "sa")
    users = {
        "admin": ("manifest-lab-admin", "system:masters"),
        "controller-manager": ("system:kube-controller-manager", None),
        "scheduler": ("system:kube-scheduler", None),
        "kubelet": (f"system:node:{NODE}", "system:nodes"),
        "kube-proxy": ("system:kube-proxy", None),
    }
    files = {
        "ca": ca[0],
        "ca-key": ca[1],
        "apiserver": apiserver[0],
        "apiserver-key": apiserver[1],
        "kubelet-client": kubelet_client[0],
        "kubelet-client-key": kubelet_client[1],
        "kubelet-serving": kubelet_serving[0],
        "kubelet-serving-key": kubelet_serving[1],
        "sa-key": sa_key,
        "sa-pub": sa_pub,
    }
    for name, (cn, org) in users.items():
        cert = pki.ensure_cert(d, name, ca=ca, common_name=cn, organization=org, client=True)
        target = paths.kubeconfig if name == "admin" else _dir(paths) / f"{name}.kubeconfig"
        files[f"{name}.kubeconfig"] = _kubeconfig(
            target, user=cn, cert=cert, ca=ca[0], server=server
        )
    return files


# --- configuration files -------------------------------------------------------


def _containerd_config(paths: Paths, pause: str) -> Path:
    d = _dir(paths) / "containerd"
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    text = f"""version = 2
root = "{d / "root"}"
state = "{d / "state"}"

[grpc]
  address = "{_containerd_sock(paths)}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{d / "opt"}"

[{cri}]
  sandbox_image = "{pause}"
  enable_unprivileged_ports = true
  enable_unprivileged_icmp = true
  # This VM's root has no CAP_SYS_RESOURCE: a negative oom_score_adj (the
  # sandbox's -998, Guaranteed pods' -997) makes runc init fail with "can't get
  # final child's PID from pipe: EOF". Clamp it to containerd's own value instead.
  restrict_oom_score_adj = true

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false

[{cri}.cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "{_dir(paths) / "cni" / "net.d"}"

[{cri}.registry]
  config_path = "/etc/containerd/certs.d"
"""
    return write(d / "config.toml", text)


def _cni_config(paths: Paths) -> Path:
    return write_json(
        _dir(paths) / "cni" / "net.d" / "10-manifest-lab.conflist",
        {
            "cniVersion": "1.0.0",
            "name": "manifest-lab",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    "isGateway": True,
                    "ipMasq": True,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": NODE_POD_CIDR}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(_dir(paths) / "cni" / "ipam"),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        },
    )


def _kubelet_config(paths: Paths, files: dict[str, Path]) -> Path:
    d = _dir(paths) / "kubelet"
    resolv = write(d / "resolv.conf", "")  # pods get cluster DNS only, never the host's resolver
    return write_json(
        d / "config.json",
        {
            "kind": "KubeletConfiguration",
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "cgroupDriver": "cgroupfs",
            "failCgroupV1": False,
            "failSwapOn": False,
            "containerRuntimeEndpoint": f"unix://{_containerd_sock(paths)}",
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(files["ca"])},
            },
            "authorization": {"mode": "Webhook"},
            "tlsCertFile": str(files["kubelet-serving"]),
            "tlsPrivateKeyFile": str(files["kubelet-serving-key"]),
            "clusterDomain": "cluster.local",
            "clusterDNS": [DNS_IP],
            "resolvConf": str(resolv),
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": 10248,
            # A VM with a shared disk: never evict for disk, never GC images (the
            # imported pause/CoreDNS images cannot be pulled back).
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "nodefs.inodesFree": "1%",
                "imagefs.available": "1%",
            },
            "serializeImagePulls": False,
            "oomScoreAdj": 0,  # no CAP_SYS_RESOURCE here (see the containerd config)
            "nodeStatusUpdateFrequency": "5s",
            "syncFrequency": "10s",
            "shutdownGracePeriod": "0s",
            "rotateCertificates": False,
            "serverTLSBootstrap": False,
            "volumePluginDir": str(d / "volume-plugins"),
            "maxPods": 110,
        },
    )


def _proxy_config(paths: Paths, files: dict[str, Path], ip: str) -> Path:
    return write_json(
        _dir(paths) / "kube-proxy.json",
        {
            "kind": "KubeProxyConfiguration",
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "clientConnection": {"kubeconfig": str(files["kube-proxy.kubeconfig"])},
            "mode": "iptables",
            "clusterCIDR": POD_CIDR,
            "hostnameOverride": NODE,
            "bindAddress": "0.0.0.0",
            "healthzBindAddress": "127.0.0.1:10256",
            "metricsBindAddress": "127.0.0.1:10249",
            "nodePortAddresses": [f"{ip}/32"],
            "conntrack": {"maxPerCore": 0},
            "oomScoreAdj": 0,
        },
    )


# --- the network outside Kubernetes ------------------------------------------


def _iptables(*args: str, check: bool = True) -> int:
    return run(["iptables", "-w", *args], check=check, quiet=True, capture=True).returncode


def _network_up() -> None:
    Path("/proc/sys/net/ipv4/ip_forward").write_text("1")
    bridge_nf = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")
    if not bridge_nf.exists():
        run(["modprobe", "br_netfilter"], check=False, quiet=True)
    if bridge_nf.exists():
        bridge_nf.write_text("1")
    else:
        warn("no br_netfilter: Service traffic between pods on one bridge may not be NATed back")
    _network_down()
    # Docker sets FORWARD's policy to DROP; let pod traffic stay on the bridge and
    # reach the host, and keep it from leaving the machine.
    _iptables("-N", CHAIN)
    _iptables("-A", CHAIN, "-i", BRIDGE, "-o", BRIDGE, "-j", "ACCEPT")
    _iptables("-A", CHAIN, "-o", BRIDGE, "-j", "ACCEPT")
    _iptables("-A", CHAIN, "-i", BRIDGE, "-j", "DROP")
    _iptables("-I", "FORWARD", "1", "-j", CHAIN)


def _network_down() -> None:
    while _iptables("-D", "FORWARD", "-j", CHAIN, check=False) == 0:
        pass
    _iptables("-F", CHAIN, check=False)
    _iptables("-X", CHAIN, check=False)


def _ours(chain: str, rules: list[str]) -> bool:
    """KUBE-* chains (kubelet's; kube-proxy --cleanup removes its own) and CNI-*
    chains whose rules all name our CNI network. Docker's chains are never touched."""
    if chain.startswith("KUBE-"):
        return True
    return chain.startswith("CNI-") and all(CNI_MARK in rule for rule in rules)


def _iptables_leftovers() -> None:
    """Rules and chains a killed kubelet or pod left behind."""
    import shlex

    for table in ("filter", "nat", "mangle"):
        dump = output(["iptables-save", "-t", table], check=False)
        chains = [line[1:].split()[0] for line in dump.splitlines() if line.startswith(":")]
        rules: dict[str, list[str]] = {chain: [] for chain in chains}
        for line in dump.splitlines():
            if line.startswith("-A "):
                rules.setdefault(line.split()[1], []).append(line)
        doomed = {chain for chain in chains if _ours(chain, rules.get(chain, []))}
        for chain, lines in rules.items():
            if chain in doomed:
                continue
            for line in lines:
                args = shlex.split(line)
                target = args[args.index("-j") + 1] if "-j" in args else ""
                if target in doomed or CNI_MARK in line:
                    _iptables("-t", table, "-D", *args[1:], check=False)
        for chain in doomed:
            _iptables("-t", table, "-F", chain, check=False)
        for chain in doomed:
            _iptables("-t", table, "-X", chain, check=False)


# --- up ------------------------------------------------------------------------


def _flags(flags: dict[str, object]) -> list[str]:
    """`--name=value` arguments, in order."""
    return [f"--{name}={value}" for name, value in flags.items()]


def _kubectl(paths: Paths, *args: str | Path, **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
    kubectl = build.bin_dirs(paths)["kubectl"]
    return run([kubectl, "--kubeconfig", paths.kubeconfig, "--context", CONTEXT, *args], **kwargs)


def _kubectl_ok(paths: Paths, *args: str) -> bool:
    return _kubectl(paths, *args, check=False, quiet=True, capture=True).returncode == 0


def _ctr(paths: Paths, *args: str | Path, **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
    return run(
        ["ctr", "--address", _containerd_sock(paths), "--namespace", "k8s.io", *args], **kwargs
    )


def _manifests(paths: Paths, coredns_image: str) -> Path:
    corefile = """.:53 {
    errors
    health :8080
    ready :8181
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }
    cache 30
    loadbalance
}
"""
    labels = {"k8s-app": "kube-dns"}
    items: list[dict[str, object]] = [
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {
                "name": "hostpath",
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
            },
            "provisioner": "kubernetes.io/host-path",
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "Immediate",
        },
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "coredns", "namespace": "kube-system"},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "system:coredns"},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["endpoints", "services", "pods", "namespaces"],
                    "verbs": ["list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["list", "watch"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "system:coredns"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:coredns",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": "kube-system"}],
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "coredns", "namespace": "kube-system"},
            "data": {"Corefile": corefile},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "coredns", "namespace": "kube-system", "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": "coredns",
                        "priorityClassName": "system-cluster-critical",
                        "dnsPolicy": "Default",
                        "containers": [
                            {
                                "name": "coredns",
                                "image": coredns_image,
                                "imagePullPolicy": "Never",
                                "args": ["-conf", "/etc/coredns/Corefile"],
                                "ports": [
                                    {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                                    {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
                                ],
                                "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns"}],
                                "livenessProbe": {"httpGet": {"path": "/health", "port": 8080}},
                                "readinessProbe": {
                                    "httpGet": {"path": "/ready", "port": 8181},
                                    "periodSeconds": 2,
                                },
                                "resources": {"requests": {"cpu": "50m", "memory": "30Mi"}},
                            }
                        ],
                        "volumes": [{"name": "config", "configMap": {"name": "coredns"}}],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": labels},
            "spec": {
                "clusterIP": DNS_IP,
                "selector": labels,
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP"},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                ],
            },
        },
    ]
    return write_json(
        _dir(paths) / "addons.json", {"apiVersion": "v1", "kind": "List", "items": items}
    )


# Service rules and DNS may lag the CoreDNS rollout by a second or two: retry.
SMOKE_SCRIPT = """
api=kubernetes.default.svc.cluster.local
for i in $(seq 60); do nslookup $api >/dev/null 2>&1 && break; sleep 1; done
nslookup $api || exit 1
echo dns-ok
healthz=$(wget -q -O - --no-check-certificate https://$api/healthz) || exit 2
echo "api-$healthz"
"""


def _smoke_pod(busybox: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "lab-ready", "namespace": "default"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "check",
                    "image": busybox,
                    "imagePullPolicy": "Never",
                    "command": ["sh", "-c", SMOKE_SCRIPT],
                }
            ],
        },
    }


def up(paths: Paths) -> None:
    binaries = build.bin_dirs(paths)
    missing = [name for name, path in binaries.items() if not path.exists()]
    if missing:
        raise LabError(f"binaries {missing} are not built: run `lab.py build`")
    node_images = images.node_images(paths)
    if any(daemon_pid(paths, n) for n in (*CONTROL_PLANE, *NODE_DAEMONS, *addons.DAEMONS)):
        info("parts of a cluster are running: taking them down first")
        down(paths)
    d = _dir(paths)
    unmount_under(d)
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    for name in (*CONTROL_PLANE, *NODE_DAEMONS):  # this run's logs; the previous run's as .1
        log = paths.logs / f"{name}.log"
        if log.exists():
            log.replace(log.with_name(f"{name}.log.1"))
    _ports_free()
    _host_cleanup(paths)
    ip = node_ip()
    files = _pki(paths, ip)
    b = {name: str(path) for name, path in binaries.items()}

    _network_up()
    started = time.monotonic()
    etcd_flags: dict[str, object] = {
        "name": "lab",
        "data-dir": d / "etcd",
        "listen-client-urls": "http://127.0.0.1:2379",
        "advertise-client-urls": "http://127.0.0.1:2379",
        "listen-peer-urls": "http://127.0.0.1:2380",
        "initial-advertise-peer-urls": "http://127.0.0.1:2380",
        "initial-cluster": "lab=http://127.0.0.1:2380",
        "listen-metrics-urls": "http://127.0.0.1:2381",
        "unsafe-no-fsync": "true",  # a throwaway cluster: speed over durability
        "snapshot-count": 10000,
        "quota-backend-bytes": 4 << 30,
    }
    start_daemon(paths, "etcd", [b["etcd"], *_flags(etcd_flags)])
    containerd_config = _containerd_config(paths, images.PAUSE_IMAGE)
    start_daemon(paths, "containerd", ["containerd", "--config", containerd_config])
    apiserver_flags: dict[str, object] = {
        "etcd-servers": "http://127.0.0.1:2379",
        "advertise-address": ip,
        "bind-address": "0.0.0.0",
        "secure-port": API_PORT,
        "service-cluster-ip-range": SERVICE_CIDR,
        "service-node-port-range": NODE_PORT_RANGE,
        "client-ca-file": files["ca"],
        "tls-cert-file": files["apiserver"],
        "tls-private-key-file": files["apiserver-key"],
        "kubelet-client-certificate": files["kubelet-client"],
        "kubelet-client-key": files["kubelet-client-key"],
        "kubelet-certificate-authority": files["ca"],
        "kubelet-preferred-address-types": "InternalIP",
        "service-account-issuer": "https://kubernetes.default.svc.cluster.local",
        "service-account-key-file": files["sa-pub"],
        "service-account-signing-key-file": files["sa-key"],
        "authorization-mode": "Node,RBAC",
        "enable-admission-plugins": "NodeRestriction",
        "allow-privileged": "true",
        "profiling": "false",
        "endpoint-reconciler-type": "lease",
        **addons.apiserver_flags(d / "pki"),
    }
    start_daemon(paths, "kube-apiserver", [b["kube-apiserver"], *_flags(apiserver_flags)])

    def containerd_answers() -> bool:
        return _ctr(paths, "version", check=False, quiet=True, capture=True).returncode == 0

    wait_for("containerd", containerd_answers, 30)
    for name, image in node_images.items():
        _ctr(paths, "images", "import", image.tarball, capture=True)
        info(f"node image {name}: {image.ref} imported into containerd (k8s.io)")
    wait_for("kube-apiserver /readyz", lambda: _kubectl_ok(paths, "get", "--raw", "/readyz"), 90)
    info(f"kube-apiserver ready after {time.monotonic() - started:.0f}s")

    cm = files["controller-manager.kubeconfig"]
    controller_manager_flags: dict[str, object] = {
        "kubeconfig": cm,
        "authentication-kubeconfig": cm,
        "authorization-kubeconfig": cm,
        "bind-address": "127.0.0.1",
        "leader-elect": "false",
        "use-service-account-credentials": "true",
        "service-account-private-key-file": files["sa-key"],
        "root-ca-file": files["ca"],
        "cluster-signing-cert-file": files["ca"],
        "cluster-signing-key-file": files["ca-key"],
        "allocate-node-cidrs": "true",
        "cluster-cidr": POD_CIDR,
        "node-cidr-mask-size": 24,
        "service-cluster-ip-range": SERVICE_CIDR,
        # PVCs get hostPath PVs under /tmp/hostpath_pv (StorageClass `hostpath`).
        "enable-hostpath-provisioner": "true",
        "controllers": "*,-cloud-node-lifecycle,-service-lb-controller,-node-route-controller",
    }
    start_daemon(
        paths,
        "kube-controller-manager",
        [b["kube-controller-manager"], *_flags(controller_manager_flags)],
    )
    sched = files["scheduler.kubeconfig"]
    scheduler_flags: dict[str, object] = {
        "kubeconfig": sched,
        "authentication-kubeconfig": sched,
        "authorization-kubeconfig": sched,
        "bind-address": "127.0.0.1",
        "leader-elect": "false",
    }
    start_daemon(paths, "kube-scheduler", [b["kube-scheduler"], *_flags(scheduler_flags)])
    _cni_config(paths)
    kubelet_flags: dict[str, object] = {
        "config": _kubelet_config(paths, files),
        "kubeconfig": files["kubelet.kubeconfig"],
        "root-dir": d / "kubelet" / "root",
        "cert-dir": d / "kubelet" / "pki",
        "hostname-override": NODE,
        "node-ip": ip,
        "v": 1,
    }
    start_daemon(paths, "kubelet", [b["kubelet"], *_flags(kubelet_flags)])
    start_daemon(
        paths, "kube-proxy", [b["kube-proxy"], "--config", _proxy_config(paths, files, ip)]
    )

    update_env(
        paths,
        {
            "KUBECONFIG": str(paths.kubeconfig),
            "MANIFEST_TEST_KUBE_CONTEXT": CONTEXT,
            # For people and scripts; the suite itself needs no kubectl.
            "MANIFEST_LAB_KUBECTL": str(binaries["kubectl"]),
        },
    )
    wait_for(f"node {NODE} to register", lambda: _kubectl_ok(paths, "get", "node", NODE), 90)
    _kubectl(paths, "wait", "--for=condition=Ready", f"node/{NODE}", "--timeout=120s", capture=True)
    info(f"node Ready after {time.monotonic() - started:.0f}s")
    _kubectl(paths, "apply", "-f", _manifests(paths, node_images["coredns"].ref), capture=True)
    wait_for(
        "the default ServiceAccount",
        lambda: _kubectl_ok(paths, "get", "serviceaccount", "default"),
        60,
    )
    _kubectl(
        paths,
        "-n",
        "kube-system",
        "rollout",
        "status",
        "deployment/coredns",
        "--timeout=120s",
        capture=True,
    )
    info(f"CoreDNS ready after {time.monotonic() - started:.0f}s")
    _smoke(paths, node_images["busybox"].ref)
    addons.up(paths, cluster_dir=d, ca=(files["ca"], files["ca-key"]), node_ip=ip, node_name=NODE)
    info(f"cluster ready after {time.monotonic() - started:.0f}s")
    info(f"KUBECONFIG={paths.kubeconfig} context {CONTEXT}")


def _smoke(paths: Paths, busybox: str) -> None:
    """A pod that resolves the API Service name through CoreDNS and reaches it via kube-proxy."""
    pod = write_json(_dir(paths) / "lab-ready-pod.json", _smoke_pod(busybox))
    _kubectl_ok(paths, "delete", "pod", "lab-ready", "--ignore-not-found", "--wait=true")
    _kubectl(paths, "apply", "-f", pod, capture=True)

    def phase() -> bool:
        proc = _kubectl(
            paths,
            "get",
            "pod",
            "lab-ready",
            "-o",
            "jsonpath={.status.phase}",
            capture=True,
            quiet=True,
            check=False,
        )
        value = proc.stdout.decode()
        if value == "Failed":
            raise LabError("smoke pod failed")
        return value == "Succeeded"

    try:
        deadline = time.monotonic() + 120
        while not phase():
            if time.monotonic() > deadline:
                raise LabError("timed out waiting for the smoke pod lab-ready")
            time.sleep(1)
    except LabError:
        logs = _kubectl(
            paths, "logs", "lab-ready", capture=True, check=False, quiet=True
        ).stdout.decode()
        describe = _kubectl(
            paths, "describe", "pod", "lab-ready", capture=True, check=False, quiet=True
        )
        raise LabError(
            f"smoke pod did not succeed.\nlogs:\n{logs}\n{describe.stdout.decode()[-2500:]}"
        ) from None
    logs = _kubectl(paths, "logs", "lab-ready", capture=True, quiet=True).stdout.decode()
    if "dns-ok" not in logs or "api-ok" not in logs:
        raise LabError(f"smoke pod ran but its output is wrong:\n{logs}")
    info("smoke pod: DNS answered, API Service reached")
    _kubectl_ok(paths, "delete", "pod", "lab-ready", "--wait=false")


# --- down -----------------------------------------------------------------------


def _drain_node(paths: Paths) -> None:
    """Delete every pod and let the kubelet stop them (CNI DEL runs then)."""
    if not _kubectl_ok(paths, "get", "--raw", "/readyz"):
        return
    _kubectl(
        paths,
        "delete",
        "pods",
        "--all",
        "--all-namespaces",
        "--grace-period=0",
        "--force",
        "--wait=false",
        check=False,
        capture=True,
        quiet=True,
    )

    def no_tasks() -> bool:
        proc = _ctr(paths, "tasks", "ls", check=False, capture=True, quiet=True)
        running = [line for line in proc.stdout.decode().splitlines()[1:] if "RUNNING" in line]
        return proc.returncode == 0 and not running

    try:
        wait_for("the kubelet to stop all containers", no_tasks, timeout=45, interval=1)
    except LabError as exc:
        warn(str(exc))


def _force_containers(paths: Paths) -> None:
    proc = _ctr(paths, "tasks", "ls", "-q", check=False, capture=True, quiet=True)
    for task in proc.stdout.decode().split():
        _ctr(paths, "tasks", "kill", "-s", "SIGKILL", task, check=False, capture=True, quiet=True)
        _ctr(paths, "tasks", "rm", "-f", task, check=False, capture=True, quiet=True)


def _host_cleanup(paths: Paths) -> None:
    """Network state a cluster leaves on the host: kube-proxy's and kubelet's rules,
    pod network namespaces, the bridge. Also run before a start, because a lab whose
    processes were killed (not taken down) leaves these behind, and a stale pod
    namespace on the bridge would answer ARP for an address the new cluster hands out."""
    binaries = build.bin_dirs(paths)
    if binaries["kube-proxy"].exists():
        run([binaries["kube-proxy"], "--cleanup"], check=False, quiet=True, capture=True)
    _network_down()
    _iptables_leftovers()
    addons.host_cleanup()
    for ns in sorted(Path("/var/run/netns").glob("cni-*")):
        run(["ip", "netns", "delete", ns.name], check=False, quiet=True, capture=True)
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        run(["ip", "link", "delete", BRIDGE], check=False, quiet=True, capture=True)


def _ports_free() -> None:
    """Only one lab cluster fits on a machine: its ports are fixed."""
    import socket

    busy = []
    for port, what in ((API_PORT, "kube-apiserver"), (2379, "etcd"), (10250, "kubelet")):
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                busy.append(f"{port} ({what})")
    if busy:
        raise LabError(
            f"ports {', '.join(busy)} are in use: another lab cluster runs here; take it down "
            "with `MANIFEST_LAB_DIR=<its dir> python3 lab/lab.py cluster-down`"
        )


def down(paths: Paths) -> None:
    d = _dir(paths)
    addons.stop(paths)
    if daemon_pid(paths, "kube-apiserver") is not None:
        # No controller may recreate what the drain deletes.
        for name in ("kube-controller-manager", "kube-scheduler"):
            stop_daemon(paths, name)
        if daemon_pid(paths, "kubelet") is not None:
            _drain_node(paths)
    for name in ("kubelet", "kube-proxy", "kube-controller-manager", "kube-scheduler"):
        stop_daemon(paths, name)
    if daemon_pid(paths, "containerd") is not None:
        _force_containers(paths)
    for name in ("kube-apiserver", "etcd"):
        stop_daemon(paths, name)
    stop_daemon(paths, "containerd", timeout=20)
    # Shims outlive containerd; they name our socket on their command line.
    kill_pids(pids_matching(str(_containerd_sock(paths))), "containerd-shim")
    kill_pids(pids_matching(str(d)), "lab cluster")

    unmount_under(d)
    left = mounts_under(d)
    if left:
        raise LabError(f"mounts left under {d}: {left[:5]}")
    try:
        _ports_free()
    except LabError:
        # Ours is stopped, so these ports belong to a cluster of another lab dir.
        warn("another lab cluster runs here: its pod network, rules and volumes stay")
        return
    _host_cleanup(paths)
    if HOSTPATH_PV_DIR.exists():
        shutil.rmtree(HOSTPATH_PV_DIR, ignore_errors=True)
    info("cluster down: no lab processes, no mounts left")


def dump_logs(paths: Paths, lines: int = 25) -> None:
    """The tail of every component's log (for a failed start in CI)."""
    for name in ("dockerd", "registry", *CONTROL_PLANE, *NODE_DAEMONS, *addons.DAEMONS):
        log = paths.logs / f"{name}.log"
        if log.exists():
            tail = log.read_bytes().decode(errors="replace").splitlines()[-lines:]
            print(f"----- {log} (last {len(tail)} lines)", file=sys.stderr)
            print("\n".join(tail), file=sys.stderr, flush=True)


def status(paths: Paths) -> None:
    for name in ("dockerd", "registry", *CONTROL_PLANE, *NODE_DAEMONS):
        pid = daemon_pid(paths, name)
        print(f"{name:<24} {'running, pid ' + str(pid) if pid else 'stopped'}")
    addons.status(paths)
    if daemon_pid(paths, "kube-apiserver") and paths.kubeconfig.exists():
        _kubectl(paths, "get", "nodes,pods", "-A", "-o", "wide", check=False, quiet=True)
    print(f"env: {paths.env_file}  (DOCKER_HOST={docker_env(paths)['DOCKER_HOST']})")
    print(f"kubeconfig: {paths.kubeconfig}  (context {CONTEXT})")
