"""Debian packages the lab needs; `install` is idempotent and quick when done."""

from __future__ import annotations

import os
import subprocess

from .util import info, run

PACKAGES = (
    # Docker engine (brings containerd and runc, which the node uses too) and the registry
    "docker.io",
    "containerd",
    "runc",
    "docker-registry",
    "apache2-utils",  # htpasswd -B
    # node networking
    "containernetworking-plugins",
    "iptables",
    "conntrack",
    "iproute2",
    "ethtool",
    "socat",
    "kmod",
    "ipset",  # kube-router's firewall (lab/labkit/addons.py)
    # images: Debian rootfs, busybox test image, static pause binary
    "debootstrap",
    "busybox-static",
    "gcc",
    "libc6-dev",
    # certificates
    "openssl",
    "ca-certificates",
    # tests: the age CLI must open the suite's encrypted backups (and the daemon image has it)
    "age",
    "openssh-client",  # ssh-keygen: an OpenSSH key as the backups' identity
    # app/tests/test_app_swagger_browser.py: Swagger UI rendered in headless Chromium, offline
    "chromium",
    # ArgoCD (labkit/argocd.py): its cache, and the repo-server's git
    "redis-server",
    "git",
)


def missing() -> list[str]:
    proc = subprocess.run(
        ["dpkg-query", "-W", "-f=${Package} ${db:Status-Status}\n", *PACKAGES],
        capture_output=True,
        text=True,
        check=False,
    )
    installed = {
        line.split()[0] for line in proc.stdout.splitlines() if line.endswith(" installed")
    }
    return [p for p in PACKAGES if p not in installed]


def install() -> None:
    todo = missing()
    if not todo:
        info(f"all {len(PACKAGES)} lab packages are installed")
        return
    info(f"installing {' '.join(todo)}")
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "update", "-q"], env=env)
    # --no-install-recommends: no extra services; policy-rc.d keeps daemons from starting.
    run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *todo],
        env={**env, **os.environ},
    )
