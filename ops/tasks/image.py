"""`inv image.build` and `inv image.push`: the app's image, built and shipped to the registry."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from invoke.context import Context

from ops import console
from ops.errors import BuildError
from ops.tasks.common import Collection, Settings, ops_task, settings_for

if TYPE_CHECKING:
    from collections.abc import Callable

    from ops.images import BuildPlan, BuildStep, BuiltImage, ImageRef, LayerProgress, PushedTag

BUILD_SETTINGS = ["registry", "image_repository", "build_context", "dockerfile", "base_image"]
PUSH_SETTINGS = ["registry", "image_repository", "registry_username", "registry_ca_file"]

LAYER_DONE = ("Pushed", "Layer already exists")

HELP = {
    "tag": "An extra tag besides latest and v1-YYYYMMDD-HHMM (UTC); repeatable",
    "dry_run": "Print the plan and touch nothing",
    "verbose": "Show every build output line and where each setting came from",
    "build_context": "Folder sent to the engine as build context (default: app)",
    "dockerfile": "Dockerfile, relative to the build context (default: Dockerfile)",
    "base_image": "BASE_IMAGE build argument (default: the Dockerfile's own)",
}


def build_plan_items(plan: BuildPlan) -> list[tuple[str, str]]:
    return [
        ("image", plan.refs[0].name),
        ("tags", ", ".join(r.tag for r in plan.refs) + "  (version tag in UTC)"),
        ("build context", str(plan.context)),
        ("Dockerfile", plan.dockerfile),
        ("builder", "classic (the docker SDK cannot drive BuildKit)"),
        ("build args", ", ".join(f"{k}={v}" for k, v in plan.build_args.items()) or "(none)"),
        *((f"label {k.rsplit('.', 1)[-1]}", v) for k, v in plan.labels.items()),
    ]


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


def run_push(settings: Settings, refs: Sequence[ImageRef]) -> list[PushedTag]:
    from ops.images import push
    from ops.registry import Registry

    registry = Registry.from_settings(settings)
    who = f" as {registry.username!r}" if registry.username else " (anonymous)"
    console.step(f"pushing {len(refs)} tag(s) to {registry.host}{who}")
    with _layer_view() as on_layer:
        pushed = push(refs, registry, on_layer=on_layer)
    for tag in pushed:
        console.success(f"pushed {tag.ref}  {tag.digest}")
        if tag.instead_of:
            console.warn(
                f"the registry already has {tag.instead_of} for another image: "
                f"pushed {tag.ref.tag} instead (a version tag is never moved)"
            )
    return pushed


@ops_task(help=HELP, iterable=["tag"])
def build(
    c: Context,
    tag: list[str] | None = None,
    dry_run: bool = False,
    verbose: bool = False,
    build_context: str | None = None,
    dockerfile: str | None = None,
    base_image: str | None = None,
) -> None:
    """Build the app's image (tags latest and v1-YYYYMMDD-HHMM), showing each step."""
    from ops.images import plan_build

    settings = settings_for(
        build_context=build_context, dockerfile=dockerfile, base_image=base_image
    )
    if verbose:
        console.explain(settings, BUILD_SETTINGS)
    plan = plan_build(settings, extra_tags=tag or ())
    if dry_run:
        console.plan("image.build would:", build_plan_items(plan))
        return
    run_build(settings, plan, verbose=verbose)


@ops_task(
    help={
        "tag": "An extra local tag to push as well (it must exist); repeatable",
        "dry_run": "Print what would be pushed and touch nothing",
        "verbose": "Show where each setting came from",
    },
    iterable=["tag"],
)
def push(
    c: Context, tag: list[str] | None = None, dry_run: bool = False, verbose: bool = False
) -> None:
    """Push the built image's tags (latest and its version tag) with the configured login."""
    from ops.images import local_refs

    settings = settings_for()
    if verbose:
        console.explain(settings, PUSH_SETTINGS)
    if dry_run:
        console.plan(
            "image.push would push:",
            [
                ("image", f"{settings.image}:latest and its other local tags"),
                ("extra tags", ", ".join(tag or ()) or "(none)"),
                ("registry", settings.registry),
                ("login", settings.registry_username or "(anonymous)"),
            ],
        )
        return
    run_push(settings, local_refs(settings, extra_tags=tag or ()))


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


ns = Collection("image", build, push)
