"""The kubeconfig read without the kubernetes package: contexts, and the exec API's door.

Importing ``kubernetes.config`` and the ``CoreV1Api`` that ``kubernetes.stream`` calls
builds hundreds of generated model classes: on a loaded machine that took longer than a whole
backup of a small database (see the profile in README, and bench/startup_bench.py). The
backup tasks need neither: the context list is a YAML read, and an exec is one websocket that
websocket-client opens directly, as ``kubernetes.stream`` itself does. Only the plain
kubeconfig entries are handled here (server, CA, client certificate or bearer token);
a context that authenticates otherwise (``exec`` plugins, ``auth-provider``, a proxy)
gets ``None`` from ``exec_door`` and goes through the kubernetes client as before.
"""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ops.errors import ContextError

_NO_KUBECONFIG_HINT = (
    "Set KUBECONFIG (or MANIFEST_KUBECONFIG) to a kubeconfig file, "
    "or enable Kubernetes in Docker Desktop."
)


@dataclass(frozen=True, kw_only=True)
class KubeConfig:
    """The merged kubeconfig: entries by name (the first file naming one wins, as in
    kubectl), the current context, and the folder of the file each entry came from."""

    clusters: dict[str, tuple[dict[str, Any], Path]]
    users: dict[str, tuple[dict[str, Any], Path]]
    contexts: dict[str, dict[str, Any]]
    current: str | None


def _paths(kubeconfig: Path | None) -> list[Path]:
    if kubeconfig is not None:
        return [kubeconfig]
    env = os.environ.get("KUBECONFIG", "")
    if env:
        return [Path(p).expanduser() for p in env.split(os.pathsep) if p]
    return [Path("~/.kube/config").expanduser()]


def load(kubeconfig: Path | None) -> KubeConfig:
    """Read the kubeconfig (``kubeconfig``, else KUBECONFIG's files, else ~/.kube/config)."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    clusters: dict[str, tuple[dict[str, Any], Path]] = {}
    users: dict[str, tuple[dict[str, Any], Path]] = {}
    contexts: dict[str, dict[str, Any]] = {}
    current: str | None = None
    problems: list[str] = []
    for path in _paths(kubeconfig):
        try:
            data = yaml.load(path.read_text(encoding="utf-8-sig"), Loader=loader)  # a safe loader
        except OSError as exc:
            problems.append(f"{path}: {exc.strerror or exc}")
            continue
        except yaml.YAMLError as exc:
            problems.append(f"{path} is not YAML: {str(exc).splitlines()[0]}")
            continue
        if not isinstance(data, dict):
            problems.append(f"{path} is not a kubeconfig")
            continue
        folder = path.parent
        for key, into in (("clusters", clusters), ("users", users)):
            for entry in data.get(key) or []:
                if isinstance(entry, dict) and entry.get("name") not in into:
                    into[str(entry.get("name"))] = (dict(entry.get(key[:-1]) or {}), folder)
        for entry in data.get("contexts") or []:
            if isinstance(entry, dict) and entry.get("name") not in contexts:
                contexts[str(entry.get("name"))] = dict(entry.get("context") or {})
        current = current or data.get("current-context") or None
    if not contexts:
        why = "; ".join(problems) or "it names no context"
        raise ContextError(f"no usable kubeconfig ({why})", hint=_NO_KUBECONFIG_HINT)
    return KubeConfig(clusters=clusters, users=users, contexts=contexts, current=current)


@dataclass(frozen=True, kw_only=True)
class ExecDoor:
    """How to open an exec websocket to a context's API server without the kubernetes
    client: its ``wss://`` base URL, a TLS context, and the headers (a bearer token)."""

    base_url: str
    host: str
    ssl_context: ssl.SSLContext
    server_hostname: str | None
    headers: tuple[str, ...]


def _data(entry: dict[str, Any], key: str, folder: Path) -> bytes | None:
    """``key-data`` (base64) or the file ``key`` names (relative to the kubeconfig)."""
    if entry.get(f"{key}-data"):
        return base64.b64decode(entry[f"{key}-data"])
    if entry.get(key):
        path = Path(str(entry[key])).expanduser()
        return (path if path.is_absolute() else folder / path).read_bytes()
    return None


def exec_door(kubeconfig: Path | None, context: str) -> ExecDoor | None:
    """The door for ``context``, or None when it needs the kubernetes client (an auth
    plugin, a proxy, basic auth, a server that is not https)."""
    config = load(kubeconfig)
    ctx = config.contexts.get(context)
    if ctx is None:
        return None
    cluster, cluster_dir = config.clusters.get(str(ctx.get("cluster")), ({}, Path()))
    user, user_dir = config.users.get(str(ctx.get("user")), ({}, Path()))
    server = str(cluster.get("server") or "")
    if (
        not server.startswith("https://")
        or cluster.get("proxy-url")
        or any(user.get(k) for k in ("exec", "auth-provider", "username", "password"))
        or any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy"))
    ):
        return None
    try:
        # The system's CAs only when the kubeconfig names none (loading them is slow).
        ca = _data(cluster, "certificate-authority", cluster_dir)
        if ca is not None:
            tls = ssl.create_default_context(cadata=ca.decode("ascii"))
        else:
            tls = ssl.create_default_context()
        if cluster.get("insecure-skip-tls-verify"):
            tls.check_hostname = False
            tls.verify_mode = ssl.CERT_NONE
        cert = _data(user, "client-certificate", user_dir)
        key = _data(user, "client-key", user_dir)
        if cert is not None and key is not None:
            _load_cert_chain(tls, cert, key)
        token = user.get("token")
        if not token and user.get("tokenFile"):
            token = Path(str(user["tokenFile"])).read_text().strip()
    except (OSError, ValueError, ssl.SSLError):
        return None  # the kubernetes client reads it, and says what is wrong with it
    return ExecDoor(
        base_url="wss://" + server.removeprefix("https://").rstrip("/"),
        host=server,
        ssl_context=tls,
        server_hostname=cluster.get("tls-server-name") or None,
        headers=(f"authorization: Bearer {token}",) if token else (),
    )


def _load_cert_chain(tls: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    # OpenSSL loads a client key only from a file: one private (0600) temporary file, gone
    # as soon as it is loaded (the kubernetes client keeps its copies until exit).
    with tempfile.TemporaryDirectory(prefix="manifest-kube-") as folder:
        path = Path(folder) / "client.pem"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(cert.rstrip(b"\n") + b"\n" + key)
        tls.load_cert_chain(path)
