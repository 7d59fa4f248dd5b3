"""The Docker engine and the image registry on localhost:30002 (TLS + htpasswd)."""

from __future__ import annotations

import secrets
import shutil
import time
from pathlib import Path
from typing import Any

from . import pki
from .util import (
    LabError,
    Paths,
    daemon_pid,
    http_status,
    info,
    kill_pids,
    pids_matching,
    run,
    start_daemon,
    stop_daemon,
    unmount_under,
    update_env,
    wait_for,
    write,
    write_json,
)

REGISTRY = "localhost:30002"
REGISTRY_USER = "manifest-ci"
POSTGRES_IMAGE = f"{REGISTRY}/lab/postgres:15"
PYTHON_IMAGE = f"{REGISTRY}/lab/python:3.11"
DOCKER_CERTS = Path("/etc/docker/certs.d") / REGISTRY
CONTAINERD_CERTS = Path("/etc/containerd/certs.d")


def registry_ca(paths: Paths) -> Path:
    return paths.pki / "registry-ca.crt"


def _password(paths: Paths) -> str:
    """The registry password: random, made once per lab dir, never printed."""
    if not paths.password_file.exists():
        write(paths.password_file, secrets.token_urlsafe(24), mode=0o600)
    return paths.password_file.read_text().strip()


def _registry_files(paths: Paths) -> Path:
    ca = pki.ensure_ca(paths.pki, "registry-ca", "manifest-lab registry CA")
    crt, key = pki.ensure_cert(
        paths.pki,
        "registry",
        ca=ca,
        common_name="localhost",
        dns=["localhost"],
        ips=["127.0.0.1", "::1"],
        server=True,
    )
    password = _password(paths)
    htpasswd = paths.registry / "htpasswd"
    if not htpasswd.exists():
        line = run(
            ["htpasswd", "-niB", REGISTRY_USER],
            capture=True,
            quiet=True,
            input_bytes=password.encode(),
        ).stdout
        write(htpasswd, line.strip() + b"\n", mode=0o600)
    # JSON is YAML: the registry reads this as its config.yml.
    return write_json(
        paths.registry / "config.yml",
        {
            "version": 0.1,
            "log": {"level": "info", "accesslog": {"disabled": False}},
            "storage": {
                "filesystem": {"rootdirectory": str(paths.registry / "data")},
                "delete": {"enabled": True},
            },
            "http": {
                "addr": f"127.0.0.1:{REGISTRY.split(':')[1]}",
                "tls": {"certificate": str(crt), "key": str(key)},
                "headers": {"X-Content-Type-Options": ["nosniff"]},
            },
            "auth": {"htpasswd": {"realm": "manifest-lab", "path": str(htpasswd)}},
        },
    )


def trust_ca(paths: Paths, registry: str = REGISTRY) -> None:
    """dockerd and containerd trust the lab CA for `registry` (host:port)."""
    ca = registry_ca(paths)
    docker_certs = DOCKER_CERTS.parent / registry
    docker_certs.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ca, docker_certs / "ca.crt")
    hosts = CONTAINERD_CERTS / registry
    hosts.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ca, hosts / "ca.crt")
    write(
        hosts / "hosts.toml",
        f'server = "https://{registry}"\n\n'
        f'[host."https://{registry}"]\n'
        '  capabilities = ["pull", "resolve", "push"]\n'
        f'  ca = "{hosts / "ca.crt"}"\n',
    )


def _port_busy(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def docker_env(paths: Paths) -> dict[str, str]:
    return {
        "DOCKER_HOST": f"unix://{paths.docker_sock}",
        "DOCKER_CONFIG": str(paths.docker_cli_config),
    }


def docker(paths: Paths, *args: str | Path, **kwargs: Any) -> None:
    run(["docker", *args], env=docker_env(paths), **kwargs)


def up(paths: Paths) -> None:
    paths.lab.mkdir(parents=True, exist_ok=True)
    config = _registry_files(paths)
    trust_ca(paths)
    ca = registry_ca(paths)

    if daemon_pid(paths, "registry") is None and _port_busy(int(REGISTRY.split(":")[1])):
        raise LabError(
            f"{REGISTRY} is in use by another process (another lab's registry? take it down "
            "with `MANIFEST_LAB_DIR=<its dir> python3 lab/lab.py services-down`)"
        )
    # The Docker engine: everything under $LAB/docker.
    d = paths.docker
    start_daemon(
        paths,
        "dockerd",
        [
            "dockerd",
            "--data-root",
            d / "root",
            "--exec-root",
            d / "exec",
            "--pidfile",
            d / "dockerd.pid",
            "-H",
            f"unix://{paths.docker_sock}",
            "--storage-driver",
            "overlay2",
        ],
    )
    start_daemon(paths, "registry", ["docker-registry", "serve", config])

    wait_for(
        "the Docker engine",
        lambda: (
            run(
                ["docker", "version"], env=docker_env(paths), capture=True, quiet=True, check=False
            ).returncode
            == 0
        ),
        timeout=60,
    )
    url = f"https://{REGISTRY}/v2/"
    wait_for(f"the registry at {url}", lambda: http_status(url, cafile=ca) == 401, timeout=30)
    docker(
        paths,
        "login",
        "--username",
        REGISTRY_USER,
        "--password-stdin",
        REGISTRY,
        input_bytes=paths.password_file.read_bytes().strip(),
        quiet=True,
        capture=True,
    )
    update_env(
        paths,
        {
            "DOCKER_HOST": f"unix://{paths.docker_sock}",
            "MANIFEST_TEST_REGISTRY": REGISTRY,
            "MANIFEST_TEST_REGISTRY_USER": REGISTRY_USER,
            "MANIFEST_TEST_REGISTRY_PASSWORD_FILE": str(paths.password_file),
            "MANIFEST_TEST_REGISTRY_CA": str(ca),
            "MANIFEST_TEST_POSTGRES_IMAGE": POSTGRES_IMAGE,
            "MANIFEST_TEST_PYTHON_IMAGE": PYTHON_IMAGE,
        },
    )
    info(f"docker engine at unix://{paths.docker_sock}")
    info(f"registry at https://{REGISTRY} (user {REGISTRY_USER})")


def down(paths: Paths) -> None:
    if daemon_pid(paths, "dockerd") is not None:
        # Containers first, so that their shims go away with the engine.
        run(
            ["sh", "-c", 'ids=$(docker ps -q); [ -z "$ids" ] || docker rm -f $ids'],
            env=docker_env(paths),
            check=False,
            quiet=True,
            capture=True,
        )
    stop_daemon(paths, "registry")
    stop_daemon(paths, "dockerd", timeout=30)
    kill_pids(pids_matching(str(paths.docker / "exec")), "docker containerd/shim")
    time.sleep(0.2)
    unmount_under(paths.docker)
    if pids_matching(str(paths.docker)):
        raise LabError(f"processes under {paths.docker} are still running")
