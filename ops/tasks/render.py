"""How tasks show long work: build steps, push layers, rollout progress.

Shared by the namespaces that run the same work (``image``, ``rollout``, ``pipeline``,
``deploy``), so no task module imports another.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING

from ops import console
from ops.errors import BuildError
from ops.tasks.common import Settings

if TYPE_CHECKING:
    from collections.abc import Callable

    from ops.deploy import DeployReport, DeployWork
    from ops.images import BuildPlan, BuildStep, BuiltImage, ImageRef, LayerProgress, PushedTag
    from ops.plan import Plan
    from ops.rollout import PodProblem, RestartWork, RolloutResult, RolloutStatus

BUILD_SETTINGS = ["registry", "image_repository", "build_context", "dockerfile", "base_image"]
PUSH_SETTINGS = ["registry", "image_repository", "registry_username", "registry_ca_file"]
ROLLOUT_SETTINGS = ["kubeconfig", "context", "allowed_contexts", "namespace", "deployment"]

LAYER_DONE = ("Pushed", "Layer already exists")


def run_build(settings: Settings, plan: BuildPlan, *, verbose: bool) -> BuiltImage:
    """Build with live steps; on a failing step, print that step's output, then fail."""
    from ops.images import build
    from ops.registry import Registry

    def on_step(step: BuildStep) -> None:
        console.step(f"Step {step.number}/{step.total} : {step.instruction}")

    def on_output(line: str) -> None:
        console.info(f"    {line}")

    try:
        built = build(
            plan,
            on_step=on_step,
            on_output=on_output if verbose else None,
            registry=Registry.from_settings(settings),
        )
    except BuildError as error:
        output = error.context.get("output")
        if isinstance(output, list) and output and not verbose:
            for line in output[-40:]:
                console.info(f"    {line}")
        raise
    console.success(
        f"built {built.image_id[:19]} in {built.seconds:.1f} s: "
        + ", ".join(str(r) for r in built.refs)
    )
    return built


def run_push(
    settings: Settings, refs: Sequence[ImageRef] | None = None, *, extra_tags: Sequence[str] = ()
) -> list[PushedTag]:
    """Push ``refs``, or (None) every local tag of ``<image>:latest`` with ``extra_tags``."""
    from ops.images import push, push_local
    from ops.registry import Registry

    registry = Registry.from_settings(settings)
    who = f" as {registry.username!r}" if registry.username else " (anonymous)"
    what = f"{len(refs)} tag(s)" if refs is not None else f"{settings.image}'s local tags"
    with _push_view(f"pushing {what} to {registry.host}{who}") as on_layer:
        if refs is None:
            pushed = push_local(settings, registry, extra_tags=extra_tags, on_layer=on_layer)
        else:
            pushed = push(refs, registry, on_layer=on_layer)
    for tag in pushed:
        console.success(f"pushed {tag.ref}  {tag.digest}")
        if tag.instead_of:
            console.warn(
                f"the registry already has {tag.instead_of} for another image: "
                f"pushed {tag.ref.tag} instead (a version tag is never moved)"
            )
    return pushed


def show_progress(status: RolloutStatus) -> None:
    console.info(f"  {status.progress}  — {status.message}")


def show_problem(problem: PodProblem) -> None:
    console.warn(str(problem))


def show_log(error: Exception) -> None:
    """The failing container's last log lines, if the error carries them."""
    context = getattr(error, "context", {})
    log = context.get("log") if isinstance(context, dict) else None
    if isinstance(log, list) and log:
        console.info(f"last log lines of pod {context.get('pod')}:")
        for line in log:
            console.info(f"    {line}")


def show_undo(revision: str) -> None:
    console.warn(f"rolling back to revision {revision} (the previous ReplicaSet's pod template)")


def run_restart(plan: Plan[RestartWork], *, image: str | None = None) -> RolloutResult:
    """Act on a restart plan (``image``: roll out that image in the same patch), showing
    its progress; the failing container's log on failure."""
    from ops.errors import RolloutFailed
    from ops.rollout import restart as restart_deployment

    work = plan.work
    target = work.target
    action = f"rolling out {image} to" if image else "restarting"
    console.step(
        f"{action} Deployment {work.deployment} in {target.namespace} (context {target.context})"
    )
    try:
        result = restart_deployment(
            target,
            work.deployment,
            timeout=work.timeout,
            undo_on_failure=work.undo_on_failure,
            on_progress=show_progress,
            on_problem=show_problem,
            on_undo=show_undo,
            image=image,
        )
    except RolloutFailed as error:
        show_log(error)
        raise
    console.success(
        f"rolled out {work.deployment} (revision {result.revision}) "
        f"in {result.seconds:.0f} s: {result.status.progress}"
    )
    return result


def run_deploy(plan: Plan[DeployWork], *, wait: bool = True) -> DeployReport:
    """Act on a deploy plan, showing each step; the rollout's failure reasons on failure."""
    from ops.deploy import deploy as deploy_objects
    from ops.errors import RolloutFailed

    try:
        report = deploy_objects(
            plan,
            on_step=console.step,
            on_progress=show_progress,
            on_problem=show_problem,
            wait=wait,
        )
    except RolloutFailed as error:
        show_log(error)
        raise
    done = {a: sum(c.action == a for c in report.changes) for a in ("create", "change")}
    console.success(
        f"deployed {plan.work.overlay} into {plan.work.target.namespace} in "
        f"{report.seconds:.0f} s: {done['create']} created, {done['change']} changed, "
        f"{sum(c.action == 'unchanged' for c in report.changes)} unchanged"
        + (f", {len(report.pruned)} deleted" if report.pruned else "")
        + (f"; ready: {', '.join(report.ready)}" if report.ready else "")
    )
    if report.retained:
        console.info(
            f"  volumes kept if the namespace is deleted (reclaim policy Retain): "
            f"{', '.join(report.retained)}"
        )
    return report


@contextmanager
def _push_view(heading: str) -> Iterator[Callable[[ImageRef, LayerProgress], None]]:
    """The push's heading and its layers' progress, shown from the engine's first chunk on:
    by then the engine is pushing, and rich loads (the first line printed in an
    ``image.push``) while it works, not before it starts. A push refused before that
    (no local image, a refused login) shows its error line only."""
    with ExitStack() as stack:
        view: Callable[[ImageRef, LayerProgress], None] | None = None

        def on_layer(ref: ImageRef, layer: LayerProgress) -> None:
            nonlocal view
            if view is None:
                console.step(heading)
                view = stack.enter_context(_layer_view())
            view(ref, layer)

        yield on_layer


@contextmanager
def _layer_view() -> Iterator[Callable[[ImageRef, LayerProgress], None]]:
    """Per-layer push progress: a bar per layer on a terminal, a line per layer state off it."""
    screen = console.out()
    if not screen.is_terminal:
        last: dict[tuple[str, str], str] = {}

        def plain(ref: ImageRef, layer: LayerProgress) -> None:
            if not layer.id or layer.status in ("Preparing", "Waiting", "Pushing"):
                return
            key = (ref.tag, layer.id)
            if last.get(key) != layer.status:
                last[key] = layer.status
                console.info(f"  {ref.tag}  {layer.id}  {layer.status}")

        yield plain
        return

    from rich.filesize import decimal
    from rich.progress import BarColumn, Progress, TaskID, TextColumn

    with Progress(
        TextColumn("  {task.description}"),
        BarColumn(),
        TextColumn("{task.fields[size]}"),
        console=screen,
    ) as progress:
        bars: dict[tuple[str, str], TaskID] = {}

        def live(ref: ImageRef, layer: LayerProgress) -> None:
            if not layer.id:
                return
            key = (ref.tag, layer.id)
            if key not in bars:
                bars[key] = progress.add_task("", total=None, size="")
            description = f"{ref.tag} {layer.id} {layer.status}"
            if layer.total and layer.current is not None:
                size = f"{decimal(layer.current)} / {decimal(layer.total)}"
                progress.update(
                    bars[key],
                    description=description,
                    completed=layer.current,
                    total=layer.total,
                    size=size,
                )
            elif layer.status in LAYER_DONE or layer.status.startswith("Mounted"):
                progress.update(bars[key], description=description, total=1, completed=1)
            else:
                progress.update(bars[key], description=description)

        yield live
