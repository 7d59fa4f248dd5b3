"""The inner loop: `inv image.build` + `inv image.push` against `docker build` + `docker push`.

After a one-line source change (warm build cache, a registry already holding the base
layers), each round runs both ways on the same build context, tags and engine:

    ours:    inv image.build ; inv image.push
    docker:  docker build -t R:latest -t R:v1-... --build-arg BASE_IMAGE=... CTX
             docker push R:latest ; docker push R:v1-...

(the seed's commands; ``--docker-labels`` gives docker build the OCI label values ours
passes too, as the ``OCI_*`` build arguments app/Dockerfile declares: the same image).

The Docker CLI is the docker.io package's (``/usr/bin/docker``), talking to the same engine
(``DOCKER_HOST``) with a throwaway ``DOCKER_CONFIG`` logged in to the same registry. Each
round and each side pushes to a repository of its own (``bench/pipeline-<pid>-<round>-<side>``):
version tags are never moved by ours, so two rounds in one minute would otherwise differ in
work; the engine mounts the base layers from the repositories it pushed them to before, both
sides alike. Rounds interleave and alternate which side goes first, so a busy machine slows
both alike; figures are medians. ``ops/`` and ``tasks.py`` are byte-compiled first
(``compileall``), as an installed copy is: where ``PYTHONDONTWRITEBYTECODE`` is set (as in
some sandboxes), every ``inv`` would otherwise compile them from source (~25 ms a process);
``--source`` measures that case. Needs the lab (``. /tmp/manifest-lab/env``):

    flock -s /tmp/lab.lock .venv/bin/python bench/pipeline_bench.py [--rounds 5] [--one-process]
        [--source]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_RATIO = 1.05
IGNORED = shutil.ignore_patterns(
    "__pycache__", "*.pyc", "*.egg-info", ".ruff_cache", ".mypy_cache", ".pytest_cache", "tests"
)


@dataclass(frozen=True, kw_only=True)
class Lab:
    registry: str
    user: str
    password: str
    ca_file: str
    base_image: str
    docker: str


@dataclass(frozen=True, kw_only=True)
class Timing:
    build: float
    push: float
    cpu: float  # CPU seconds of the client processes (inv, or the docker CLI), not the engine's

    @property
    def total(self) -> float:
        return self.build + self.push


def lab_from_env(docker: str) -> Lab:
    missing = [
        name
        for name in (
            "DOCKER_HOST",
            "MANIFEST_TEST_REGISTRY",
            "MANIFEST_TEST_REGISTRY_USER",
            "MANIFEST_TEST_REGISTRY_PASSWORD_FILE",
            "MANIFEST_TEST_PYTHON_IMAGE",
        )
        if not os.environ.get(name)
    ]
    if missing:
        sys.exit(f"missing {', '.join(missing)}: run `. /tmp/manifest-lab/env` first")
    password_file = Path(os.environ["MANIFEST_TEST_REGISTRY_PASSWORD_FILE"])
    return Lab(
        registry=os.environ["MANIFEST_TEST_REGISTRY"],
        user=os.environ["MANIFEST_TEST_REGISTRY_USER"],
        password=password_file.read_text(encoding="utf-8").strip(),
        ca_file=os.environ.get("MANIFEST_TEST_REGISTRY_CA", ""),
        base_image=os.environ["MANIFEST_TEST_PYTHON_IMAGE"],
        docker=docker,
    )


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(args: list[str], *, env: dict[str, str], cwd: Path, stdin: str | None = None) -> float:
    """Run one command to completion; its wall time, or exit with its output on failure."""
    started = time.perf_counter()
    done = subprocess.run(
        args, env=env, cwd=cwd, input=stdin, capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{' '.join(args[:3])}… failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return seconds


def prepare_context(folder: Path, source: Path, extra_ca: Path | None) -> Path:
    """A copy of the app's build context in a git checkout of its own, as ``app/`` is in
    the repository (the checkout's ``.git`` outside the context)."""
    checkout = folder / "checkout"
    context = checkout / "app"
    shutil.copytree(source, context, ignore=IGNORED)
    if extra_ca is not None:
        shutil.copy2(extra_ca, context / "extra-ca.crt")
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    for step in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "bench context"]):
        subprocess.run([*git, *step], cwd=checkout, check=True, capture_output=True)
    return context


def touch_source(context: Path, marker: str) -> None:
    """The one-line source change: a comment at the end of the package's __init__.py.

    The marker must never have been built before: the classic builder's cache is keyed by
    the files' contents, so an earlier run's change would be a cache hit for one side.
    """
    init = context / "student_api" / "__init__.py"
    lines = init.read_text(encoding="utf-8").splitlines()
    lines = [line for line in lines if not line.startswith("# bench change ")]
    init.write_text("\n".join([*lines, f"# bench change {marker}"]) + "\n", encoding="utf-8")


def ours(
    lab: Lab, context: Path, repository: str, env: dict[str, str], *, one_process: bool
) -> Timing:
    inv_env = {
        **env,
        "MANIFEST_BUILD_CONTEXT": str(context),
        "MANIFEST_REGISTRY": lab.registry,
        "MANIFEST_IMAGE_REPOSITORY": repository,
        "MANIFEST_REGISTRY_USERNAME": lab.user,
        "MANIFEST_REGISTRY_PASSWORD": lab.password,
        "MANIFEST_REGISTRY_CA_FILE": lab.ca_file,
        "MANIFEST_BASE_IMAGE": lab.base_image,
    }
    inv = str(Path(sys.executable).with_name("inv"))
    cpu = children_cpu()
    if one_process:  # the same build and push in one process (shown under build)
        build = run([inv, "pipeline", "--no-rollout"], env=inv_env, cwd=ROOT)
        return Timing(build=build, push=0.0, cpu=children_cpu() - cpu)
    build = run([inv, "image.build"], env=inv_env, cwd=ROOT)
    push = run([inv, "image.push"], env=inv_env, cwd=ROOT)
    return Timing(build=build, push=push, cpu=children_cpu() - cpu)


def docker_cli(
    lab: Lab, context: Path, repository: str, env: dict[str, str], *, labelled: bool
) -> Timing:
    """The seed's way, with the tags (and, if ``labelled``, the labels) ours sets."""
    cpu = children_cpu()
    now = datetime.now(UTC)
    version = now.strftime("v1-%Y%m%d-%H%M")
    image = f"{lab.registry}/{repository}"
    args = [lab.docker, "build", "-t", f"{image}:latest", "-t", f"{image}:{version}"]
    args += ["--build-arg", f"BASE_IMAGE={lab.base_image}"]
    if labelled:  # as ours passes them to a Dockerfile declaring OCI_* (app/Dockerfile does)
        revision = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=context, capture_output=True, text=True, check=True
        ).stdout.strip()
        labels = {
            "OCI_CREATED": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "OCI_TITLE": repository,
            "OCI_VERSION": version,
            "OCI_REVISION": revision,
        }
        for key, value in labels.items():
            args += ["--build-arg", f"{key}={value}"]
    build = run([*args, str(context)], env=env, cwd=ROOT)
    push = run([lab.docker, "push", f"{image}:latest"], env=env, cwd=ROOT)
    push += run([lab.docker, "push", f"{image}:{version}"], env=env, cwd=ROOT)
    return Timing(build=build, push=push, cpu=children_cpu() - cpu)


def cleanup(lab: Lab, prefix: str, env: dict[str, str]) -> None:
    """Remove the bench's local tags (the registry keeps its copies: it cannot delete)."""
    listed = subprocess.run(
        [lab.docker, "images", "--format", "{{.Repository}}:{{.Tag}}"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    mine = [ref for ref in listed if ref.startswith(f"{lab.registry}/{prefix}")]
    if mine:
        subprocess.run([lab.docker, "rmi", *mine], env=env, capture_output=True, check=False)


def median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median kept)")
    parser.add_argument("--docker", default="/usr/bin/docker", help="the Docker CLI to compare")
    parser.add_argument(
        "--extra-ca",
        type=Path,
        default=Path("/etc/ssl/certs/ca-certificates.crt"),
        help="CA bundle put in the context as extra-ca.crt (a proxy in front of PyPI)",
    )
    parser.add_argument(
        "--docker-labels",
        action="store_true",
        help="give docker build the OCI label values ours passes (OCI_* build args)",
    )
    parser.add_argument(
        "--one-process",
        action="store_true",
        help="ours as `inv pipeline --no-rollout` (build and push in one process)",
    )
    parser.add_argument(
        "--source",
        action="store_true",
        help="do not byte-compile ops/ and tasks.py first (their __pycache__ as it is)",
    )
    args = parser.parse_args()
    lab = lab_from_env(args.docker)
    if not args.source:
        subprocess.run(
            [sys.executable, "-m", "compileall", "-q", "ops", "tasks.py"], cwd=ROOT, check=True
        )
    run_id = f"{os.getpid()}-{time.time_ns()}"
    prefix = f"bench/pipeline-{os.getpid()}"
    with tempfile.TemporaryDirectory(prefix="pipeline-bench-") as tmp:
        folder = Path(tmp)
        extra_ca = args.extra_ca if args.extra_ca.is_file() else None
        context = prepare_context(folder, ROOT / "app", extra_ca)
        env = {**os.environ, "DOCKER_CONFIG": str(folder / "docker-config")}
        env.pop("DOCKER_BUILDKIT", None)  # the classic builder, as ours uses
        run(
            [lab.docker, "login", "-u", lab.user, "--password-stdin", lab.registry],
            env=env,
            cwd=ROOT,
            stdin=lab.password,
        )
        try:
            # Warm-up, not counted: the dependency layers in the build cache and the base
            # layers in the registry, for both sides.
            touch_source(context, f"{run_id} warm-up ours")
            ours(lab, context, f"{prefix}-warm-ours", env, one_process=args.one_process)
            touch_source(context, f"{run_id} warm-up docker")
            docker_cli(lab, context, f"{prefix}-warm-docker", env, labelled=args.docker_labels)
            results: dict[str, list[Timing]] = {"ours": [], "docker": []}
            load = os.getloadavg()
            for round_ in range(args.rounds):
                order = ("ours", "docker") if round_ % 2 == 0 else ("docker", "ours")
                for side in order:
                    touch_source(context, f"{run_id} {round_} {side}")
                    repository = f"{prefix}-{round_}-{side}"
                    if side == "ours":
                        timing = ours(lab, context, repository, env, one_process=args.one_process)
                    else:
                        timing = docker_cli(
                            lab, context, repository, env, labelled=args.docker_labels
                        )
                    results[side].append(timing)
                    print(
                        f"round {round_ + 1}/{args.rounds} {side:6}  build {timing.build:5.2f} s"
                        f"  push {timing.push:5.2f} s  total {timing.total:5.2f} s"
                        f"  client CPU {timing.cpu:4.2f} s",
                        flush=True,
                    )
            load_after = os.getloadavg()
        finally:
            cleanup(lab, prefix, env)
    compiled = "from source" if args.source else "byte-compiled"
    print(
        f"\n{args.rounds} rounds, medians (load average {load[0]:.2f} → {load_after[0]:.2f}; "
        f"ops/ {compiled}):"
    )
    figures = {}
    labels = {
        "ours": "inv pipeline --no-rollout" if args.one_process else "inv image.build + image.push",
        "docker": "docker build + push" + (" (labels)" if args.docker_labels else ""),
    }
    for side, label in labels.items():
        timings = results[side]
        figures[side] = median([t.total for t in timings])
        print(
            f"  {label:32}  build {median([t.build for t in timings]):5.2f} s"
            f"  push {median([t.push for t in timings]):5.2f} s  total {figures[side]:5.2f} s"
            f"  client CPU {median([t.cpu for t in timings]):4.2f} s"
        )
    ratios = [o.total / d.total for o, d in zip(results["ours"], results["docker"], strict=True)]
    ratio = figures["ours"] / figures["docker"]
    verdict = "ok" if ratio <= TARGET_RATIO else "over target"
    print(
        f"  ratio of medians {ratio:.2f}x (per round {min(ratios):.2f}-{max(ratios):.2f}x; "
        f"target <= {TARGET_RATIO}x: {verdict})"
    )
    return 0 if ratio <= TARGET_RATIO else 1


if __name__ == "__main__":
    raise SystemExit(main())
