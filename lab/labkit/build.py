"""Go builds of Kubernetes, etcd and CoreDNS from the Go module proxy, cached by version.

Each module under lab/go/ pins one upstream version in its go.mod (+ go.sum);
the cache key is the hash of those files, the build flags and the Go version,
so changing a pin rebuilds and an unchanged pin is a no-op.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from .util import LAB_SOURCE, LabError, Paths, digest, info, output, run

GO_CANDIDATES = ("/usr/local/go/bin/go", "/usr/lib/go/bin/go")


@dataclass(frozen=True, kw_only=True)
class GoBuild:
    """One `go build` invocation: packages of one pinned module -> binaries."""

    name: str
    packages: tuple[str, ...]
    binaries: tuple[str, ...]
    ldflags: str = ""

    @property
    def module_dir(self) -> Path:
        return LAB_SOURCE / "go" / self.name

    def pinned(self, module: str) -> str:
        text = (self.module_dir / "go.mod").read_text()
        match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)} (v\S+)", text, re.M)
        if not match:
            raise LabError(f"{module} is not pinned in {self.module_dir / 'go.mod'}")
        return match.group(1)


def kube_version() -> str:
    return KUBE.pinned("k8s.io/kubernetes")


def _kube_ldflags() -> str:
    version = GoBuild(name="kube", packages=(), binaries=()).pinned("k8s.io/kubernetes")
    major, minor = version.lstrip("v").split(".")[:2]
    flags = []
    # What hack/lib/version.sh sets, for both places the version is read from.
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        for key, value in (
            ("gitVersion", version),
            ("gitMajor", major),
            ("gitMinor", minor),
            ("gitTreeState", "clean"),
            ("buildDate", "1970-01-01T00:00:00Z"),
        ):
            flags.append(f"-X {pkg}.{key}={value}")
    return " ".join(flags)


KUBE_COMMANDS = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
    "kubectl",
)
KUBE = GoBuild(
    name="kube",
    packages=tuple(f"k8s.io/kubernetes/cmd/{c}" for c in KUBE_COMMANDS),
    binaries=KUBE_COMMANDS,
)
ETCD = GoBuild(name="etcd", packages=(".",), binaries=("etcd",))
COREDNS = GoBuild(name="coredns", packages=(".",), binaries=("coredns",))
# ArgoCD: one binary; ARGOCD_BINARY_NAME picks the component (see labkit/argocd.py).
ARGOCD = GoBuild(
    name="argocd", packages=("github.com/argoproj/argo-cd/v3/cmd",), binaries=("argocd",)
)


def go_binary() -> str:
    found = shutil.which("go")
    for candidate in (found, *GO_CANDIDATES):
        if candidate and Path(candidate).exists():
            return candidate
    raise LabError("no Go toolchain found (looked in PATH, /usr/local/go/bin, /usr/lib/go/bin)")


def go_env(paths: Paths) -> dict[str, str]:
    return {
        "GOMODCACHE": str(paths.cache / "gomod"),
        "GOCACHE": str(paths.cache / "go-build"),
        "GOFLAGS": "-mod=readonly",
        "CGO_ENABLED": "0",
        "GOTOOLCHAIN": "local",
    }


def _ldflags(build: GoBuild) -> str:
    extra = _kube_ldflags() if build.name == "kube" else build.ldflags
    if build.name == "argocd":
        # What upstream's Makefile sets (PACKAGE=.../common); gitTag + clean = a release.
        version = build.pinned("github.com/argoproj/argo-cd/v3")
        common = "github.com/argoproj/argo-cd/v3/common"
        extra = (
            f"-X {common}.version={version.lstrip('v')} -X {common}.gitTag={version} "
            f"-X {common}.gitCommit={version} -X {common}.gitTreeState=clean"
        )
    if build.name == "etcd":
        extra = (
            f"-X go.etcd.io/etcd/api/v3/version.GitSHA={build.pinned('go.etcd.io/etcd/server/v3')}"
        )
    return f"-s -w {extra}".strip()


def output_dir(paths: Paths, build: GoBuild, go: str) -> Path:
    go_version = output([go, "env", "GOVERSION"]).strip()
    files = [p for p in sorted(build.module_dir.iterdir()) if p.suffix in {".mod", ".sum", ".go"}]
    key = digest([*files, _ldflags(build), go_version, " ".join(build.packages)])
    return paths.bin_cache / f"{build.name}-{key}"


def build_one(paths: Paths, build: GoBuild, go: str) -> Path:
    out = output_dir(paths, build, go)
    if all((out / b).exists() for b in build.binaries):
        info(f"{build.name}: cached in {out}")
        return out
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    started = time.monotonic()
    info(f"{build.name}: building {', '.join(build.binaries)} (slow on a cold cache)")
    run(
        [
            "nice",
            "-n",
            "10",
            go,
            "build",
            "-trimpath",
            "-ldflags",
            _ldflags(build),
            "-o",
            f"{tmp}/",
            *build.packages,
        ],
        cwd=build.module_dir,
        env=go_env(paths),
        log=paths.logs / f"go-build-{build.name}.log",
    )
    if len(build.binaries) == 1 and not (tmp / build.binaries[0]).exists():
        # `go build -o dir/ .` names the binary after the module's last element.
        built = [p for p in tmp.iterdir() if p.is_file()]
        if len(built) == 1:
            built[0].rename(tmp / build.binaries[0])
    missing = [b for b in build.binaries if not (tmp / b).exists()]
    if missing:
        raise LabError(f"{build.name}: go build produced no {missing} in {tmp}")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    info(f"{build.name}: built in {time.monotonic() - started:.0f}s -> {out}")
    return out


def bin_dirs(paths: Paths) -> dict[str, Path]:
    """Where each binary lives (the cache dirs of the current pins)."""
    go = go_binary()
    dirs = {}
    for build in (KUBE, ETCD, COREDNS, ARGOCD):
        out = output_dir(paths, build, go)
        for binary in build.binaries:
            dirs[binary] = out / binary
    return dirs


def build_all(paths: Paths) -> dict[str, Path]:
    go = go_binary()
    os.makedirs(paths.logs, exist_ok=True)
    for build in (KUBE, ETCD, COREDNS, ARGOCD):
        build_one(paths, build, go)
    binaries = bin_dirs(paths)
    missing = [name for name, path in binaries.items() if not path.exists()]
    if missing:
        raise LabError(f"binaries missing after build: {missing}")
    info(f"binaries: {paths.bin_cache}")
    return binaries
