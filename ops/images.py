"""Build, tag and push the app's image through the Docker engine's API (the docker SDK).

The build uses the engine's classic builder: the SDK's ``build`` endpoint cannot drive
BuildKit, so our Dockerfiles stay free of BuildKit-only syntax (``RUN --mount``, heredocs).
Tags: ``latest`` and ``v1-YYYYMMDD-HHMM`` in UTC (so two machines in different time zones
never tag the same minute differently), plus any extra tags, all from one build.

Pushes pass the credentials from the settings with every request (``X-Registry-Auth``), never
relying on a possibly stale ``~/.docker/config.json``, and read the whole JSON stream: the
engine reports push failures inside a 200 response, so every ``error`` chunk raises.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ops.config import Settings
from ops.errors import BuildError, ConfigError, EngineUnavailable, ImageError, PushError
from ops.plan import Item, Plan, items
from ops.registry import Registry

if TYPE_CHECKING:
    from docker import DockerClient

    from ops.registry import RegistrySession

TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)$")
ENGINE_TIMEOUT = 600  # seconds a single engine call may stay silent (a long RUN step)
ENGINE_CONNECT_TIMEOUT = 10  # seconds to connect, check the API version and ping


@dataclass(frozen=True, kw_only=True)
class ImageRef:
    """One tagged image name: ``registry/repository:tag``."""

    registry: str
    repository: str
    tag: str

    @property
    def name(self) -> str:
        """The reference without its tag, as the engine's push and tag calls want it."""
        return f"{self.registry}/{self.repository}"

    def __str__(self) -> str:
        return f"{self.name}:{self.tag}"


@dataclass(frozen=True, kw_only=True)
class BuildPlan:
    """Everything a build will do, shown by --dry-run before anything happens."""

    context: Path
    dockerfile: str
    refs: tuple[ImageRef, ...]
    build_args: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class BuildStep:
    """One ``Step N/M : INSTRUCTION`` line of the classic builder."""

    number: int
    total: int
    instruction: str


@dataclass(frozen=True, kw_only=True)
class BuiltImage:
    image_id: str
    refs: tuple[ImageRef, ...]
    steps: int
    seconds: float


@dataclass(frozen=True, kw_only=True)
class LayerProgress:
    """A push status line for one layer (``id``) or for the whole push (``id`` empty)."""

    id: str
    status: str
    current: int | None = None
    total: int | None = None


@dataclass(frozen=True, kw_only=True)
class PushedTag:
    ref: ImageRef
    digest: str
    # The version tag asked for, when the registry already had it for another image and
    # ``ref`` is the free one pushed instead (a version tag is never moved).
    instead_of: str | None = None


VERSION_TAG = re.compile(r"^v1-\d{8}-\d{4}(-\d+)?$")
# The build argument that carries each OCI label into a Dockerfile that declares it
# (app/Dockerfile does): all labels then go in the Dockerfile's one LABEL step. Labels
# passed through the engine's API become one LABEL step each in the classic builder, each
# a container created and committed, after every source change (bench/pipeline_bench.py).
LABEL_ARGS = {
    "org.opencontainers.image.created": "OCI_CREATED",
    "org.opencontainers.image.title": "OCI_TITLE",
    "org.opencontainers.image.version": "OCI_VERSION",
    "org.opencontainers.image.revision": "OCI_REVISION",
}
_ARG_LINE = re.compile(r"^\s*ARG\s+(.+)$", re.IGNORECASE | re.MULTILINE)


def declared_args(dockerfile: str) -> set[str]:
    """The names every ``ARG`` line of a Dockerfile declares (``ARG A=1 B`` → A, B)."""
    return {
        word.split("=", 1)[0]
        for line in _ARG_LINE.findall(dockerfile)
        for word in line.split()
        if not word.startswith("\\")
    }


def label_transport(
    labels: Mapping[str, str], dockerfile: str
) -> tuple[dict[str, str], dict[str, str]]:
    """``(build_args, api_labels)`` carrying ``labels``: as build arguments when the
    Dockerfile declares every one's ``LABEL_ARGS`` name, else as the API's labels."""
    names = {LABEL_ARGS.get(key) for key in labels}
    if None not in names and names <= declared_args(dockerfile):
        return {LABEL_ARGS[key]: value for key, value in labels.items()}, {}
    return {}, dict(labels)


def free_version_tag(tag: str, taken: Callable[[str], str | None], digest: str | None) -> str:
    """``tag``, or the first ``tag-2``, ``tag-3``… that the registry does not hold for another
    image than ``digest`` (pure; ``taken`` gives a tag's digest in the registry or None).

    A version tag names one image forever: two pushes in the same minute get two tags.
    """
    candidate, n = tag, 1
    while True:
        existing = taken(candidate)
        if existing is None or (digest is not None and existing == digest):
            return candidate
        n += 1
        candidate = f"{tag}-{n}"


def version_tag(now: datetime | None = None) -> str:
    """The seed's version tag ``v1-YYYYMMDD-HHMM``, always in UTC."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return moment.strftime("v1-%Y%m%d-%H%M")


def image_refs(
    settings: Settings, *, now: datetime | None = None, extra_tags: Iterable[str] = ()
) -> tuple[ImageRef, ...]:
    """``latest``, the version tag and any extra tags, in that order, without duplicates."""
    tags: list[str] = []
    for tag in ("latest", version_tag(now), *extra_tags):
        if not TAG.match(tag):
            raise ConfigError(
                f"invalid image tag {tag!r}",
                hint="A tag is up to 128 letters, digits, '_', '.' or '-', "
                "not starting with '.' or '-'.",
            )
        if tag not in tags:
            tags.append(tag)
    return tuple(
        ImageRef(registry=settings.registry, repository=settings.image_repository, tag=t)
        for t in tags
    )


def git_revision(path: Path) -> str | None:
    """The commit checked out at ``path``, or None outside a git checkout (or without git)."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=path,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    revision = done.stdout.strip()
    return revision if done.returncode == 0 and re.fullmatch(r"[0-9a-f]{40,64}", revision) else None


def plan_build(
    settings: Settings, *, extra_tags: Iterable[str] = (), now: datetime | None = None
) -> BuildPlan:
    """What a build of the app's image will do; checks the Dockerfile exists, touches nothing."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    context = settings.build_context
    dockerfile = context / settings.dockerfile
    if not context.is_dir():
        raise ConfigError(
            f"build context {context} is not a folder "
            f"(setting build_context, from {settings.source_of('build_context')})",
            hint="Run from the repository root, or set --build-context / MANIFEST_BUILD_CONTEXT.",
            setting="build_context",
        )
    if not dockerfile.is_file():
        raise ConfigError(
            f"no Dockerfile at {dockerfile} "
            f"(setting dockerfile, from {settings.source_of('dockerfile')})",
            hint="Create it, or point --dockerfile / MANIFEST_DOCKERFILE at it "
            "(relative to the build context).",
            setting="dockerfile",
        )
    labels = {
        "org.opencontainers.image.created": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "org.opencontainers.image.title": settings.image_repository,
        "org.opencontainers.image.version": version_tag(moment),
    }
    revision = git_revision(context)
    if revision:
        labels["org.opencontainers.image.revision"] = revision
    build_args = {"BASE_IMAGE": settings.base_image} if settings.base_image else {}
    return BuildPlan(
        context=context,
        dockerfile=settings.dockerfile,
        refs=image_refs(settings, now=moment, extra_tags=extra_tags),
        build_args=build_args,
        labels=labels,
    )


def build_items(plan: BuildPlan) -> tuple[Item, ...]:
    """The lines a build shows in its plan."""
    return items(
        ("image", plan.refs[0].name),
        ("tags", ", ".join(r.tag for r in plan.refs) + "  (version tag in UTC)"),
        ("build context", str(plan.context)),
        ("Dockerfile", plan.dockerfile),
        ("builder", "classic (the docker SDK cannot drive BuildKit)"),
        ("build args", ", ".join(f"{k}={v}" for k, v in plan.build_args.items()) or "(none)"),
        *((f"label {k.rsplit('.', 1)[-1]}", v) for k, v in plan.labels.items()),
    )


def plan_image_build(settings: Settings, *, extra_tags: Iterable[str] = ()) -> Plan[BuildPlan]:
    """``image.build``'s plan: its work is the ``BuildPlan`` that ``build`` carries out."""
    build_plan = plan_build(settings, extra_tags=extra_tags)
    return Plan(title="image.build", items=build_items(build_plan), work=build_plan)


def plan_push(settings: Settings, *, extra_tags: Sequence[str] = ()) -> Plan[tuple[str, ...]]:
    """``image.push``'s plan (the local tags are looked up when it acts: no engine needed)."""
    return Plan(
        title="image.push",
        items=items(
            ("image", f"{settings.image}:latest and its other local tags"),
            ("extra tags", ", ".join(extra_tags) or "(none)"),
            ("registry", settings.registry),
            ("login", settings.registry_username or "(anonymous)"),
        ),
        work=tuple(extra_tags),
    )


@contextmanager
def engine() -> Iterator[DockerClient]:
    """A client of the Docker engine at ``engine_address()``, closed after use.

    The one error boundary of the docker SDK and requests: whatever they raise inside the
    ``with`` block and was not turned into a more precise error (BuildError, PushError)
    becomes EngineUnavailable here. Connecting and the ping may take ENGINE_CONNECT_TIMEOUT
    (an engine that accepts and never answers is one line in seconds); the work itself (a
    long RUN step, a push) gets ENGINE_TIMEOUT.

    The API version is negotiated as the Docker CLI does, from the ping's ``Api-Version``
    header: the SDK's own negotiation asks ``GET /version``, which the engine answers only
    after collecting its components' versions (runc, containerd, docker-init), a round trip
    many times the ping's on every task.
    """
    import requests
    from docker.constants import MINIMUM_DOCKER_API_VERSION
    from docker.errors import DockerException
    from urllib3.exceptions import HTTPError

    address = engine_address()
    try:
        probe = _client(address, MINIMUM_DOCKER_API_VERSION)
        try:
            # the SDK's ping() returns the body only; the header is what says the version
            reply = probe.api.get(f"{probe.api.base_url}/_ping", timeout=ENGINE_CONNECT_TIMEOUT)
        finally:
            probe.close()
        reply.raise_for_status()
        client = _client(address, negotiated_version(reply.headers.get("Api-Version")))
    except (DockerException, requests.RequestException, HTTPError, OSError) as exc:
        if _untrusted(exc):
            raise EngineUnavailable(
                f"the Docker engine at {address}: TLS verification failed "
                "(its certificate is not signed by the CA in DOCKER_CERT_PATH)",
                hint="Point DOCKER_CERT_PATH at the ca.pem, cert.pem and key.pem made for this "
                "engine, or DOCKER_HOST at the engine you meant.",
            ) from exc
        raise EngineUnavailable(
            f"the Docker engine is not reachable at {address} ({_engine_reason(exc)})"
        ) from exc
    client.api.timeout = ENGINE_TIMEOUT
    try:
        yield client
    except (DockerException, requests.RequestException, HTTPError) as exc:
        raise EngineUnavailable(
            f"lost the Docker engine at {address} ({_engine_reason(exc)})"
        ) from exc
    finally:
        client.close()


def _client(address: str, version: str | None) -> DockerClient:
    """A client of the engine speaking API ``version`` (None: the SDK asks the engine);
    no request is made."""
    import docker

    if os.environ.get("DOCKER_HOST"):
        # also honours DOCKER_TLS_VERIFY / DOCKER_CERT_PATH
        return docker.from_env(version=version, timeout=ENGINE_CONNECT_TIMEOUT)
    return docker.DockerClient(base_url=address, version=version, timeout=ENGINE_CONNECT_TIMEOUT)


def negotiated_version(engine_api: str | None) -> str | None:
    """The API version to speak with an engine whose ping said ``Api-Version: engine_api``:
    the lower of it and the SDK's own (what the Docker CLI does). None if the engine did
    not say (the SDK then asks it with ``GET /version``)."""
    from docker.constants import DEFAULT_DOCKER_API_VERSION
    from docker.utils import version_lt

    if not engine_api or not re.fullmatch(r"\d+\.\d+", engine_api):
        return None
    return (
        engine_api
        if version_lt(engine_api, DEFAULT_DOCKER_API_VERSION)
        else (DEFAULT_DOCKER_API_VERSION)
    )


def engine_address() -> str:
    """DOCKER_HOST, else the platform's socket; Docker Desktop's per-user socket if only it exists.

    The docker SDK does not read `docker context`; Docker Desktop on macOS may be set up
    without the /var/run/docker.sock link, with the engine at ~/.docker/run/docker.sock.
    """
    if os.environ.get("DOCKER_HOST"):
        return os.environ["DOCKER_HOST"]
    if sys.platform == "win32":
        return "npipe:////./pipe/docker_engine"
    system = Path("/var/run/docker.sock")
    desktop = Path.home() / ".docker" / "run" / "docker.sock"
    if not system.exists() and desktop.exists():
        return f"unix://{desktop}"
    return f"unix://{system}"


def engine_version() -> str:
    """The engine's version, e.g. ``20.10.24 (API 1.41, linux/amd64)``."""
    with engine() as client:
        version = client.version()
    return (
        f"{version.get('Version', '?')} (API {version.get('ApiVersion', '?')}, "
        f"{version.get('Os', '?')}/{version.get('Arch', '?')})"
    )


class BuildLog:
    """Reads the classic builder's JSON stream: steps, their output, the image id, errors."""

    def __init__(self) -> None:
        self.step: BuildStep | None = None
        self.step_output: list[str] = []
        self.image_id: str | None = None
        self._partial = ""

    def feed(self, chunk: Mapping[str, Any]) -> tuple[BuildStep | None, list[str]]:
        """Take one chunk; return a new step (if one started) and the complete output lines.

        Raises BuildError for an error chunk, with the failing step's output attached.
        """
        if "error" in chunk or "errorDetail" in chunk:
            detail = chunk.get("errorDetail") or {}
            message = str(chunk.get("error") or detail.get("message") or "unknown error")
            self._flush()
            raise self.failure(message)
        aux = chunk.get("aux")
        if isinstance(aux, Mapping) and aux.get("ID"):
            self.image_id = str(aux["ID"])
        text = chunk.get("stream")
        if not isinstance(text, str):
            return None, []
        self._partial += text
        *complete, self._partial = self._partial.split("\n")
        new_step: BuildStep | None = None
        lines: list[str] = []
        for raw in complete:
            line = _ANSI.sub("", raw).rstrip("\r")
            found = _STEP.match(line)
            if found:
                new_step = self.step = BuildStep(
                    number=int(found[1]), total=int(found[2]), instruction=found[3]
                )
                self.step_output = []
                continue
            built = re.match(r"^Successfully built ([0-9a-f]+)$", line)
            if built and self.image_id is None:
                self.image_id = built[1]
            if line.startswith((" ---> ", "Successfully ", "Removing intermediate container")):
                continue  # the builder's own bookkeeping, not the step's output
            self.step_output.append(line)
            lines.append(line)
        return new_step, lines

    def _flush(self) -> None:
        rest = _ANSI.sub("", self._partial).rstrip()
        if rest:
            self.step_output.append(rest)
        self._partial = ""

    def failure(self, message: str) -> BuildError:
        where = "the build"
        if self.step:
            instruction = " ".join(self.step.instruction.split())
            if len(instruction) > 100:
                instruction = instruction[:99] + "…"
            where = f"step {self.step.number}/{self.step.total} ({instruction})"
        text = " ".join(message.split())
        # The engine repeats the whole command; the step above already names it.
        exited = re.fullmatch(r"The command .* returned a non-zero code: (\d+)", text)
        if exited:
            text = f"exit code {exited[1]}"
        error = BuildError(f"{where} failed: {text}", hint=self.hint(text))
        error.context["output"] = list(self.step_output)
        return error

    def hint(self, message: str) -> str | None:
        """What a first-time user most likely needs, read from the failing step and its output."""
        seen = " ".join([message, *self.step_output[-200:]])
        if re.search(
            r"CERTIFICATE_VERIFY_FAILED|certificate verify failed|x509: certificate", seen
        ):
            return (
                "Behind a TLS-intercepting proxy? Put its CA bundle at app/extra-ca.crt "
                "(in the build context) and build again; see the README."
            )
        if self.step and self.step.instruction.upper().startswith("FROM"):
            return (
                "The base image cannot be pulled here: set MANIFEST_BASE_IMAGE (or "
                "--base-image) to one you can pull, e.g. a copy in your own registry."
            )
        return None


def build(
    plan: BuildPlan,
    *,
    on_step: Callable[[BuildStep], None] | None = None,
    on_output: Callable[[str], None] | None = None,
    registry: Registry | None = None,
) -> BuiltImage:
    """Build the image, streaming each step, and tag it with every ref of the plan.

    With ``registry`` given and BASE_IMAGE in it, its credentials go with the build, so the
    engine can pull the base image with them rather than with a possibly stale docker login.
    """
    from docker.errors import APIError, DockerException

    started = time.monotonic()
    log = BuildLog()
    with engine() as client:
        base = plan.build_args.get("BASE_IMAGE", "")
        if (
            registry is not None
            and registry.username
            and base.startswith(f"{registry.host}/")
            and not _has_image(client, base)
        ):
            # Only when the engine lacks the base image: the classic builder never pulls a
            # local one, and a login is a round trip from the engine to the registry.
            # Kept in this client's memory only; nothing is written to the docker config. A
            # refusal is not fatal here: if the image cannot be pulled, the FROM step
            # reports the refusal itself.
            with suppress(APIError):
                client.login(
                    registry.username, registry.password, registry=registry.host, reauth=True
                )
        try:
            dockerfile = (plan.context / plan.dockerfile).read_text(encoding="utf-8")
            label_args, labels = label_transport(plan.labels, dockerfile)
            stream = client.api.build(
                path=str(plan.context),
                dockerfile=plan.dockerfile,
                tag=str(plan.refs[0]),
                buildargs={**plan.build_args, **label_args},
                labels=labels,
                rm=True,
                forcerm=True,
                decode=True,
                timeout=ENGINE_TIMEOUT,
            )
            for chunk in stream:
                step, lines = log.feed(chunk)
                if step is not None and on_step is not None:
                    on_step(step)
                if on_output is not None:
                    for line in lines:
                        on_output(line)
            if log.image_id is None:
                raise log.failure("the engine reported no image id")
            for ref in plan.refs[1:]:
                client.api.tag(log.image_id, ref.name, ref.tag, force=True)
        except APIError as exc:
            raise BuildError(
                f"the engine refused the build: {_api_explanation(exc)}",
                hint="Check the Dockerfile path and the build context.",
            ) from exc
        except DockerException as exc:
            raise EngineUnavailable(f"lost the Docker engine during the build ({exc})") from exc
        except OSError as exc:  # the build context could not be read or sent
            raise BuildError(f"could not send the build context {plan.context}: {exc}") from exc
    return BuiltImage(
        image_id=log.image_id,
        refs=plan.refs,
        steps=log.step.total if log.step else 0,
        seconds=time.monotonic() - started,
    )


def _has_image(client: DockerClient, name: str) -> bool:
    from docker.errors import ImageNotFound

    try:
        client.api.inspect_image(name)
    except ImageNotFound:
        return False
    return True


def _tags_of_latest(
    client: DockerClient, settings: Settings, extra_tags: Iterable[str]
) -> tuple[ImageRef, ...]:
    """The tags of the local image ``<image>:latest`` in the app's repository (what to push)."""
    from docker.errors import ImageNotFound

    latest = ImageRef(
        registry=settings.registry, repository=settings.image_repository, tag="latest"
    )
    try:
        image = client.images.get(str(latest))
    except ImageNotFound as exc:
        raise ImageError(
            f"no local image {latest}", hint="Build it first: inv image.build"
        ) from exc
    tags = [t.rsplit(":", 1)[1] for t in image.tags if t.rsplit(":", 1)[0] == latest.name]
    for extra in extra_tags:
        if extra not in tags:
            raise ImageError(
                f"the local image {latest} has no tag {extra!r}",
                hint=f"Build with it: inv image.build --tag {extra}",
            )
    tags.sort(key=lambda t: (t != "latest", t))
    return tuple(
        ImageRef(registry=settings.registry, repository=settings.image_repository, tag=t)
        for t in tags
    )


def push_error(chunk: Mapping[str, Any]) -> str | None:
    """The error a push-stream chunk reports, or None (the engine sends errors with HTTP 200)."""
    if "error" not in chunk and "errorDetail" not in chunk:
        return None
    detail = chunk.get("errorDetail") or {}
    message = chunk.get("error") or (detail.get("message") if isinstance(detail, Mapping) else "")
    return " ".join(str(message or "unknown push error").split())


def read_push_stream(
    ref: ImageRef,
    chunks: Iterable[Mapping[str, Any]],
    on_layer: Callable[[LayerProgress], None] | None = None,
) -> PushedTag:
    """Follow one tag's push stream; raise PushError on any error chunk or a missing digest."""
    digest: str | None = None
    for chunk in chunks:
        message = push_error(chunk)
        if message is not None:
            raise PushError(
                f"push of {ref} failed: {message}",
                hint=_push_hint(message),
                image=str(ref),
            )
        aux = chunk.get("aux")
        if isinstance(aux, Mapping) and aux.get("Digest"):
            digest = str(aux["Digest"])
        status = chunk.get("status")
        if status and on_layer is not None:
            detail = chunk.get("progressDetail") or {}
            on_layer(
                LayerProgress(
                    id=str(chunk.get("id") or ""),
                    status=str(status),
                    current=detail.get("current"),
                    total=detail.get("total"),
                )
            )
    if digest is None:
        raise PushError(
            f"push of {ref} ended without a digest from the registry",
            hint="The push did not complete; run it again and check the registry's log.",
            image=str(ref),
        )
    return PushedTag(ref=ref, digest=digest)


def push(
    refs: Sequence[ImageRef],
    registry: Registry,
    *,
    on_layer: Callable[[ImageRef, LayerProgress], None] | None = None,
) -> list[PushedTag]:
    """Push every ref (all tags of one local image) with the registry's credentials.

    The first ref goes through the engine, which uploads whatever layers the registry
    lacks; every other ref names the same manifest, so the registry is simply told the
    new tag (the manifest's bytes put under it, unchanged). ``docker push`` of a second
    tag would have the engine check every layer again for nothing.

    Version tags (``v1-YYYYMMDD-HHMM``) are never moved: one the registry already holds for
    another image is pushed as ``…-2`` (``-3``, …) instead; the result says so.
    """
    with engine() as client:
        return _push(client, refs, registry, on_layer=on_layer)


def push_local(
    settings: Settings,
    registry: Registry,
    *,
    extra_tags: Iterable[str] = (),
    on_layer: Callable[[ImageRef, LayerProgress], None] | None = None,
) -> list[PushedTag]:
    """Push every local tag of ``<image>:latest`` in the app's repository (``extra_tags``
    must be among them), on one connection to the engine."""
    with engine() as client:
        refs = _tags_of_latest(client, settings, extra_tags)
        return _push(client, refs, registry, on_layer=on_layer)


def _push(
    client: DockerClient,
    refs: Sequence[ImageRef],
    registry: Registry,
    *,
    on_layer: Callable[[ImageRef, LayerProgress], None] | None,
) -> list[PushedTag]:
    from docker.errors import APIError, DockerException

    from ops.registry import RegistrySession

    # Always send X-Registry-Auth (an empty one is anonymous): without it, the SDK would
    # fall back to whatever ~/.docker/config.json holds.
    auth: dict[str, str] = (
        {
            "username": registry.username,
            "password": registry.password,
            "serveraddress": registry.host,
        }
        if registry.username
        else {}
    )
    pushed: list[PushedTag] = []
    with RegistrySession(registry) as session:
        if refs:
            _may_push(session, refs[0])
        for asked in refs:
            ref = asked
            # The digest of the first tag of this push (all tags are one image).
            digest = pushed[0].digest if pushed else None
            if VERSION_TAG.match(asked.tag):
                free = free_version_tag(
                    asked.tag, functools.partial(session.manifest_digest, asked.repository), digest
                )
                if free != asked.tag:
                    ref = ImageRef(registry=asked.registry, repository=asked.repository, tag=free)
                    try:
                        client.api.tag(str(asked), ref.name, ref.tag)
                    except APIError as exc:
                        raise PushError(
                            f"cannot tag {asked} as {ref.tag}: {_api_explanation(exc)}",
                            image=str(asked),
                        ) from exc
            instead_of = asked.tag if ref is not asked else None
            if digest is not None:
                session.tag_manifest(ref.repository, digest, ref.tag)
                pushed.append(PushedTag(ref=ref, digest=digest, instead_of=instead_of))
                continue

            def layer(progress: LayerProgress, ref: ImageRef = ref) -> None:
                if on_layer is not None:
                    on_layer(ref, progress)

            try:
                chunks = client.api.push(
                    ref.name, tag=ref.tag, stream=True, decode=True, auth_config=auth
                )
                try:
                    done = read_push_stream(ref, chunks, layer)
                except PushError as refused:
                    error = _not_allowed(session, ref, refused)
                    if error is refused:
                        raise
                    raise error from refused
                pushed.append(PushedTag(ref=ref, digest=done.digest, instead_of=instead_of))
            except APIError as exc:
                raise PushError(
                    f"push of {ref} failed: {_api_explanation(exc)}",
                    hint="Build the image first (inv image.build) and check the registry.",
                    image=str(ref),
                ) from exc
            except DockerException as exc:
                raise EngineUnavailable(f"lost the Docker engine during the push ({exc})") from exc
    return pushed


def _may_push(session: RegistrySession, ref: ImageRef) -> None:
    """One clear PushError, before the engine's own (``unauthorized: authentication
    required`` for a wrong password and a pull-only account alike), if the push cannot work:
    an unreachable registry or a refused login. (A login without push on the repository is
    told apart after the engine refused it, by ``_not_allowed``: asking first would cost
    every push two more requests, each a password check in the registry.)"""
    registry = session.registry
    login = session.check().login  # unreachable: one RegistryError line
    if login == "refused":
        raise PushError(
            f"push of {ref} failed: registry {registry.host} refused the login of "
            f"{registry.username!r} (wrong user name or password)",
            hint=_push_hint("unauthorized"),
            image=str(ref),
        )
    if login == "no credentials":
        raise PushError(
            f"push of {ref} failed: registry {registry.host} needs a login and no "
            "credentials are set",
            hint="Put them in secrets/registry_username.txt and secrets/registry_password.txt "
            "(or MANIFEST_REGISTRY_USERNAME / _PASSWORD).",
            image=str(ref),
        )


def _not_allowed(session: RegistrySession, ref: ImageRef, refused: PushError) -> PushError:
    """The clear error for a login without push on the repository (a Harbor pull-only
    account), if that is why the engine's push was refused; else the engine's own."""
    if "unauthorized" not in refused.message.lower() and "denied" not in refused.message.lower():
        return refused
    if session.push_allowed(ref.repository):
        return refused
    registry = session.registry
    who = repr(registry.username) if registry.username else "anonymous"
    return PushError(
        f"push of {ref} failed: registry {registry.host} does not let {who} push to "
        f"{ref.repository} (a pull-only account?)",
        hint="Use an account with push permission on the project (in Harbor: a robot "
        "account with push, or a member with the developer role).",
        image=str(ref),
    )


def _push_hint(message: str) -> str:
    lowered = message.lower()
    if "unauthorized" in lowered or "authentication required" in lowered or "denied" in lowered:
        return (
            "The registry refused the credentials: check secrets/registry_username.txt and "
            "secrets/registry_password.txt (or MANIFEST_REGISTRY_USERNAME / _PASSWORD)."
        )
    if "certificate" in lowered or "x509" in lowered:
        return "The engine does not trust the registry's certificate: add its CA to the engine."
    if "connection refused" in lowered or "no such host" in lowered:
        return "The engine cannot reach the registry: is it running, and is the address right?"
    return PushError.default_hint


def _api_explanation(exc: Exception) -> str:
    explanation = getattr(exc, "explanation", None) or str(exc)
    return " ".join(str(explanation).split())


def _untrusted(exc: Exception) -> bool:
    """Whether the engine's TLS certificate failed verification (DOCKER_TLS_VERIFY)."""
    text = str(exc)
    return "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text


def _engine_reason(exc: Exception) -> str:
    text = str(exc)
    for pattern, short in (
        (r"No such file or directory|FileNotFoundError", "no engine listens there"),
        (r"Connection refused", "connection refused"),
        (r"Permission denied", "permission denied: add your user to the docker group"),
        (r"timed out|Read timeout|ReadTimeout", "timed out"),
    ):
        if re.search(pattern, text):
            return short
    return " ".join(text.split())[:160]
