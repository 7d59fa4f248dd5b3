"""Images made here, never pulled.

- lab/debian:bookworm: `debootstrap --variant=minbase` (tarball cached), `docker import`ed
- localhost:30002/lab/postgres:15 and localhost:30002/lab/python:3.11 built FROM it, pushed
- localhost:30002/lab/busybox:stable: FROM scratch + Debian's static busybox, pushed
- registry.k8s.io/pause:<tag>: pause.c from the pinned kubernetes module, static gcc build
- lab.local/coredns:<version>: the CoreDNS binary built by `build`

Built images are saved as tarballs in the cache keyed by their inputs, so a warm
run only `docker load`s and pushes. The node's containerd imports the pause,
CoreDNS and busybox tarballs at cluster-up (containerd runs only then).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import build
from .services import POSTGRES_IMAGE, PYTHON_IMAGE, REGISTRY, docker, docker_env
from .util import LAB_SOURCE, LabError, Paths, digest, info, output, run

DEBIAN_IMAGE = "lab/debian:bookworm"
BUSYBOX_IMAGE = f"{REGISTRY}/lab/busybox:stable"
LOCAL_BUSYBOX_IMAGE = "lab.local/busybox:stable"
PAUSE_TAG = "3.10.1"
PAUSE_IMAGE = f"registry.k8s.io/pause:{PAUSE_TAG}"
KEY_LABEL = "io.manifest.lab.key"
HOST_SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))


@dataclass(frozen=True, kw_only=True)
class NodeImage:
    """An image the node's containerd imports (no registry involved)."""

    ref: str
    tarball: Path


def _docker_out(paths: Paths, *args: str) -> str:
    return output(["docker", *args], env=docker_env(paths), check=False)


def _image_key(paths: Paths, ref: str) -> str:
    return _docker_out(
        paths, "image", "inspect", "-f", f'{{{{index .Config.Labels "{KEY_LABEL}"}}}}', ref
    ).strip()


def _apt_sources() -> list[Path]:
    files: list[Path] = []
    for entry in HOST_SOURCES:
        if entry.is_file():
            files.append(entry)
        elif entry.is_dir():
            files += sorted(p for p in entry.iterdir() if p.suffix in {".list", ".sources"})
    return files


def _mirror() -> str:
    """The host's Debian mirror (first `URIs:` / `deb` line), as apt is configured."""
    for source in _apt_sources():
        for line in source.read_text().splitlines():
            line = line.strip()
            if line.startswith("URIs:") and "security" not in line:
                return line.split()[1]
            if line.startswith("deb ") and "security" not in line:
                return next(p for p in line.split()[1:] if "://" in p)
    return "http://deb.debian.org/debian"


def debian_rootfs(paths: Paths) -> tuple[Path, str]:
    """The cached minbase tarball (made once) and its key."""
    sources = _apt_sources()
    mirror = _mirror()
    key = digest(["bookworm", "minbase", mirror, *sources])
    tarball = paths.cache / "rootfs" / f"debian-bookworm-minbase-{key}.tar"
    if tarball.exists():
        info(f"debian rootfs: cached {tarball}")
        return tarball, key
    tarball.parent.mkdir(parents=True, exist_ok=True)
    work = paths.lab / "tmp"
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        root = Path(tmp) / "rootfs"
        run(
            ["debootstrap", "--variant=minbase", "bookworm", root, mirror],
            log=paths.logs / "debootstrap.log",
        )
        # apt inside the image uses the same sources as the host.
        (root / "etc/apt/sources.list").unlink(missing_ok=True)
        for source in sources:
            target = root / str(source).lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for item in (root / junk).glob("*"):
                if item.is_file():
                    item.unlink()
        partial = tarball.with_name(tarball.name + ".partial")
        run(["tar", "--numeric-owner", "-C", root, "-cf", partial, "."], quiet=True)
        partial.rename(tarball)
    info(f"debian rootfs: {tarball}")
    return tarball, key


def _import_debian(paths: Paths) -> str:
    tarball, key = debian_rootfs(paths)
    if _image_key(paths, DEBIAN_IMAGE) != key:
        docker(
            paths,
            "import",
            "--change",
            f"LABEL {KEY_LABEL}={key}",
            "--change",
            'CMD ["/bin/bash"]',
            tarball,
            DEBIAN_IMAGE,
        )
    return key


def _build_cached(
    paths: Paths,
    ref: str,
    context: Path,
    key: str,
    build_args: dict[str, str] | None = None,
) -> Path:
    """`docker build` unless an image with this key is in the engine or the cache."""
    cached = paths.cache / "images" / f"{ref.replace('/', '_').replace(':', '_')}-{key}.tar"
    if _image_key(paths, ref) == key:
        info(f"{ref}: up to date in the engine")
    elif cached.exists():
        docker(paths, "load", "-i", cached, capture=True)
        info(f"{ref}: loaded from {cached}")
    else:
        args: list[str] = []
        for name, value in (build_args or {}).items():
            args += ["--build-arg", f"{name}={value}"]
        docker(
            paths,
            "build",
            "--label",
            f"{KEY_LABEL}={key}",
            "-t",
            ref,
            *args,
            context,
            log=paths.logs / f"docker-build-{ref.split('/')[-1].replace(':', '-')}.log",
        )
    if not cached.exists():
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_name(cached.name + ".partial")
        docker(paths, "save", "-o", partial, ref, quiet=True)
        partial.rename(cached)
    return cached


def _context(
    name: str, extra: dict[str, Path] | None = None
) -> tuple[Path, str, tempfile.TemporaryDirectory[str]]:
    """A build context: lab/images/<name>/ plus extra files; and its content key."""
    tmp = tempfile.TemporaryDirectory(prefix=f"lab-{name}-")
    ctx = Path(tmp.name)
    parts: list[str | bytes | Path] = [name]
    for item in sorted((LAB_SOURCE / "images" / name).iterdir()):
        shutil.copy2(item, ctx / item.name)
        parts.append(item)
    for target, source in (extra or {}).items():
        shutil.copy2(source, ctx / target)
        parts += [target, source.read_bytes()]
    return ctx, digest(parts), tmp


def _pause_binary(paths: Paths, workdir: Path) -> Path:
    version = build.kube_version()
    src = paths.cache / "gomod" / f"k8s.io/kubernetes@{version}" / "build/pause/linux/pause.c"
    if not src.exists():
        raise LabError(
            f"{src} missing: run `lab.py build` first (it downloads the kubernetes module)"
        )
    out = workdir / "pause"
    run(
        [
            "gcc",
            "-Os",
            "-Wall",
            "-Werror",
            "-static",
            f"-DVERSION=v{PAUSE_TAG}-{version}",
            "-o",
            out,
            src,
        ]
    )
    run(["strip", out], quiet=True)
    return out


def build_all(paths: Paths) -> dict[str, NodeImage]:
    build_base(paths)
    return build_node(paths)


def build_base(paths: Paths) -> None:
    """The images that need no Go build: Debian, PostgreSQL, Python, busybox (pushed). What
    the tests that need no cluster use, so CI makes them while Kubernetes still compiles."""
    if run(
        ["docker", "version"], env=docker_env(paths), check=False, capture=True, quiet=True
    ).returncode:
        raise LabError("the Docker engine is not running: run `lab.py services-up` first")
    base_key = _import_debian(paths)

    for ref, name in ((POSTGRES_IMAGE, "postgres"), (PYTHON_IMAGE, "python")):
        ctx, key, tmp = _context(name)
        with tmp:
            _build_cached(paths, ref, ctx, digest([base_key, key]), {"BASE_IMAGE": DEBIAN_IMAGE})
        docker(paths, "push", ref, capture=True)
        info(f"{ref}: pushed")

    busybox = Path("/bin/busybox")
    ctx, key, tmp = _context("busybox", {"busybox": busybox})
    with tmp:
        _build_cached(paths, BUSYBOX_IMAGE, ctx, key)
    docker(paths, "push", BUSYBOX_IMAGE, capture=True)


def build_node(paths: Paths) -> dict[str, NodeImage]:
    """The images the node's containerd imports: pause (from the kubernetes module), busybox
    and CoreDNS (its binary from `build`)."""
    node_images: dict[str, NodeImage] = {}
    with tempfile.TemporaryDirectory(prefix="lab-pause-") as work:
        pause = _pause_binary(paths, Path(work))
        ctx, key, tmp = _context("pause", {"pause": pause})
        with tmp:
            node_images["pause"] = NodeImage(
                ref=PAUSE_IMAGE, tarball=_build_cached(paths, PAUSE_IMAGE, ctx, key)
            )

    busybox = Path("/bin/busybox")
    docker(paths, "tag", BUSYBOX_IMAGE, LOCAL_BUSYBOX_IMAGE, quiet=True)
    ctx, key, tmp = _context("busybox", {"busybox": busybox})
    with tmp:
        node_images["busybox"] = NodeImage(
            ref=LOCAL_BUSYBOX_IMAGE, tarball=_build_cached(paths, LOCAL_BUSYBOX_IMAGE, ctx, key)
        )

    coredns_bin = build.bin_dirs(paths)["coredns"]
    if not coredns_bin.exists():
        raise LabError(f"{coredns_bin} missing: run `lab.py build` first")
    ref = f"lab.local/coredns:{build.COREDNS.pinned('github.com/coredns/coredns')}"
    ctx, key, tmp = _context("coredns", {"coredns": coredns_bin})
    with tmp:
        node_images["coredns"] = NodeImage(ref=ref, tarball=_build_cached(paths, ref, ctx, key))
    for name, image in node_images.items():
        info(f"node image {name}: {image.ref} ({image.tarball})")
    return node_images


def node_images(paths: Paths) -> dict[str, NodeImage]:
    """The node images of the current inputs, without building (for cluster-up)."""
    found = {}
    for name, ref in (
        ("pause", PAUSE_IMAGE),
        ("busybox", LOCAL_BUSYBOX_IMAGE),
        ("coredns", f"lab.local/coredns:{build.COREDNS.pinned('github.com/coredns/coredns')}"),
    ):
        pattern = f"{ref.replace('/', '_').replace(':', '_')}-*.tar"
        candidates = sorted((paths.cache / "images").glob(pattern), key=lambda p: p.stat().st_mtime)
        if not candidates:
            raise LabError(
                f"no image tarball for {ref} in {paths.cache / 'images'}: run `lab.py images`"
            )
        found[name] = NodeImage(ref=ref, tarball=candidates[-1])
    return found
