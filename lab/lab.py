#!/usr/bin/env python3
"""manifest lab: a Docker engine, a registry on localhost:30002 and a one-node
Kubernetes cluster built on this machine, for the end-to-end tests.

    python3 lab/lab.py install        Debian packages the lab needs (idempotent)
    python3 lab/lab.py services-up    dockerd + registry (TLS, htpasswd); writes $LAB/env
    python3 lab/lab.py build          Kubernetes, etcd, CoreDNS, metrics-server, Traefik,
                                      kube-router from the Go module proxy (cached)
    python3 lab/lab.py images         Debian/PostgreSQL/Python base images, pause, CoreDNS, busybox
    python3 lab/lab.py base-images    only those that need no Go build (Debian, PostgreSQL,
                                      Python, busybox): all the tests without a cluster use
    python3 lab/lab.py cluster-up     etcd, control plane, containerd, kubelet, kube-proxy, CoreDNS,
                                      kube-router, metrics-server, Traefik (lab/labkit/addons.py)
    python3 lab/lab.py harbor-up      token server + token-auth registry on localhost:30003
    python3 lab/lab.py argocd-up      ArgoCD (redis, repo-server, application-controller), git repo
    python3 lab/lab.py up             services-up, build (alongside harbor-up and base-images),
                                      images, cluster-up, argocd-up
    python3 lab/lab.py argocd-down | cluster-down | harbor-down | services-down | down
    python3 lab/lab.py status

$LAB = $MANIFEST_LAB_DIR (default /tmp/manifest-lab); cache = $MANIFEST_LAB_CACHE
(default /var/cache/manifest-lab). Python 3.11 stdlib only.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from labkit import addons, argocd, build, cluster, harbor, images, packages, services
from labkit.util import LabError, Paths, info


def _timed(phases: list[tuple[str, Callable[[], object]]]) -> None:
    timings: list[tuple[str, float]] = []
    try:
        for name, phase in phases:
            started = time.monotonic()
            info(f"=== {name}")
            phase()
            timings.append((name, time.monotonic() - started))
            info(f"=== {name}: {timings[-1][1]:.1f}s")
    finally:
        for name, seconds in timings:
            print(f"[lab] phase {name:<14} {seconds:7.1f}s", flush=True)


def _alongside(background: Callable[[], object], *steps: Callable[[], object]) -> None:
    """`background` in a thread while `steps` run one after another: on a fresh machine the Go
    builds are CPU-bound for half an hour and the images mostly wait on the network and disk.
    The thread is a daemon: when a step fails, lab.py exits without waiting for the build."""
    failure: list[BaseException] = []

    def run_background() -> None:
        try:
            background()
        except BaseException as exc:  # re-raised in the main thread below
            failure.append(exc)

    thread = threading.Thread(target=run_background, name="lab-build", daemon=True)
    thread.start()
    for step in steps:
        step()
    thread.join()
    if failure:
        raise failure[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="lab.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = [
        "install",
        "services-up",
        "services-down",
        "build",
        "harbor-up",
        "harbor-down",
        "images",
        "base-images",
        "cluster-up",
        "cluster-down",
        "argocd-up",
        "argocd-down",
        "up",
        "down",
        "status",
    ]
    parser.add_argument("command", choices=commands)
    args = parser.parse_args(argv)
    paths = Paths.from_env()

    phases: dict[str, list[tuple[str, Callable[[], object]]]] = {
        "install": [("install", packages.install)],
        "services-up": [("services-up", lambda: services.up(paths))],
        "services-down": [("services-down", lambda: services.down(paths))],
        "build": [("build", lambda: (build.build_all(paths), addons.build_all(paths)))],
        "harbor-up": [("harbor-up", lambda: harbor.up(paths))],
        "harbor-down": [("harbor-down", lambda: harbor.down(paths))],
        "images": [("images", lambda: images.build_all(paths))],
        "base-images": [("base-images", lambda: images.build_base(paths))],
        "cluster-up": [("cluster-up", lambda: cluster.up(paths))],
        "cluster-down": [
            ("argocd-down", lambda: argocd.down(paths)),  # it needs the cluster
            ("cluster-down", lambda: cluster.down(paths)),
        ],
        "argocd-up": [("argocd-up", lambda: argocd.up(paths))],
        "argocd-down": [("argocd-down", lambda: argocd.down(paths))],
        "up": [
            ("services-up", lambda: services.up(paths)),
            (
                "build+images",
                lambda: _alongside(
                    lambda: (build.build_all(paths), addons.build_all(paths)),
                    lambda: harbor.up(paths),
                    lambda: images.build_base(paths),
                ),
            ),
            ("node-images", lambda: images.build_node(paths)),
            ("cluster-up", lambda: cluster.up(paths)),
            ("argocd-up", lambda: argocd.up(paths)),
        ],
        "down": [
            ("argocd-down", lambda: argocd.down(paths)),
            ("cluster-down", lambda: cluster.down(paths)),
            ("harbor-down", lambda: harbor.down(paths)),
            ("services-down", lambda: services.down(paths)),
        ],
        "status": [
            ("status", lambda: (cluster.status(paths), harbor.status(paths))),
            ("argocd", lambda: argocd.status(paths)),
        ],
    }
    try:
        _timed(phases[args.command])
        sys.stdout.flush()  # a closed pipe is found here, not at the interpreter's exit
    except LabError as exc:
        print(f"[lab] FAILED ({args.command}): {exc}", file=sys.stderr, flush=True)
        if args.command in {"up", "cluster-up", "services-up", "harbor-up"}:
            cluster.dump_logs(paths)
        if args.command in {"up", "argocd-up"}:
            argocd.dump_logs(paths)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader stopped reading (`lab.py status | head`): the output it wanted was given.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
