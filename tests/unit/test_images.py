"""Tag scheme, build-stream and push-stream reading, on chunks recorded from a real engine."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from ops.config import Settings, load_settings
from ops.errors import BuildError, ConfigError, PushError
from ops.images import (
    LABEL_ARGS,
    VERSION_TAG,
    BuildLog,
    ImageRef,
    LayerProgress,
    free_version_tag,
    git_revision,
    image_refs,
    label_transport,
    negotiated_version,
    plan_build,
    push_error,
    read_push_stream,
    version_tag,
)

REF = ImageRef(registry="localhost:30002", repository="studenten/manifest-app", tag="latest")
DIGEST = "sha256:9eb60c63248c2404c68462203b1266fab2fef0e8c1a15429866602502a11c343"

# Recorded from dockerd 20.10 pushing to the lab registry (docker SDK, decode=True).
PUSH_OK = [
    {"status": "The push refers to repository [localhost:30002/studenten/manifest-app]"},
    {"status": "Preparing", "progressDetail": {}, "id": "158c504e1085"},
    {"status": "Preparing", "progressDetail": {}, "id": "8b2113449b5a"},
    {
        "status": "Pushing",
        "progressDetail": {"current": 512, "total": 1228},
        "progress": "[====>    ]",
        "id": "8b2113449b5a",
    },
    {"status": "Pushed", "progressDetail": {}, "id": "8b2113449b5a"},
    {"status": "Layer already exists", "progressDetail": {}, "id": "158c504e1085"},
    {"status": f"latest: digest: {DIGEST} size: 736"},
    {"progressDetail": {}, "aux": {"Tag": "latest", "Digest": DIGEST, "Size": 736}},
]
PUSH_UNAUTHORIZED = [
    {"status": "The push refers to repository [localhost:30002/studenten/manifest-app]"},
    {"status": "Preparing", "progressDetail": {}, "id": "158c504e1085"},
    {"status": "Preparing", "progressDetail": {}, "id": "8b2113449b5a"},
    {
        "errorDetail": {"message": "unauthorized: authentication required"},
        "error": "unauthorized: authentication required",
    },
]
PUSH_UNREACHABLE = [
    {"status": "The push refers to repository [localhost:1/studenten/manifest-app]"},
    {
        "errorDetail": {
            "message": 'Get "https://localhost:1/v2/": dial tcp 127.0.0.1:1: connect: '
            "connection refused"
        },
        "error": 'Get "https://localhost:1/v2/": dial tcp 127.0.0.1:1: connect: connection refused',
    },
]
PUSH_ERROR_DETAIL_ONLY = [
    {"status": "Preparing", "progressDetail": {}, "id": "158c504e1085"},
    {"errorDetail": {"message": "blob upload unknown"}},
]
PUSH_TRUNCATED = PUSH_OK[:-2]  # the stream ended before the registry confirmed a digest


def settings(tmp_path: Path, **values: object) -> Settings:
    env_file = tmp_path / "empty.env"
    env_file.touch()
    return load_settings(values, env_file=env_file, environ={})


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (datetime(2026, 11, 26, 7, 5, tzinfo=UTC), "v1-20261126-0705"),
        (datetime(2026, 11, 26, 8, 5, tzinfo=timezone(timedelta(hours=1))), "v1-20261126-0705"),
        (datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC), "v1-20261231-2359"),
        (datetime(2027, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=2))), "v1-20261231-2230"),
    ],
    ids=["utc", "berlin-same-minute", "end-of-year", "new-year-abroad-is-still-old-year-utc"],
)
def test_version_tag_is_utc(moment: datetime, expected: str) -> None:
    assert version_tag(moment) == expected


def test_refs_are_latest_version_and_extras_once(tmp_path: Path) -> None:
    moment = datetime(2026, 11, 26, 7, 5, tzinfo=UTC)
    refs = image_refs(settings(tmp_path), now=moment, extra_tags=["rc1", "latest", "rc1"])
    assert [str(r) for r in refs] == [
        "localhost:30002/studenten/manifest-app:latest",
        "localhost:30002/studenten/manifest-app:v1-20261126-0705",
        "localhost:30002/studenten/manifest-app:rc1",
    ]


@pytest.mark.parametrize("tag", ["-dash", ".dot", "has space", "a" * 129, "colon:tag", ""])
def test_invalid_extra_tag_is_a_config_error(tmp_path: Path, tag: str) -> None:
    with pytest.raises(ConfigError, match="invalid image tag"):
        image_refs(settings(tmp_path), extra_tags=[tag])


def test_plan_has_labels_and_base_image(tmp_path: Path) -> None:
    context = tmp_path / "app"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM scratch\n")
    plan = plan_build(
        settings(tmp_path, build_context=context, base_image="localhost:30002/lab/python:3.11"),
        now=datetime(2026, 11, 26, 7, 5, 9, tzinfo=UTC),
    )
    assert plan.build_args == {"BASE_IMAGE": "localhost:30002/lab/python:3.11"}
    assert plan.labels["org.opencontainers.image.created"] == "2026-11-26T07:05:09Z"
    assert plan.labels["org.opencontainers.image.version"] == "v1-20261126-0705"
    assert "org.opencontainers.image.revision" not in plan.labels  # tmp_path is no checkout


def test_no_base_image_means_no_build_arg(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "Dockerfile").write_text("FROM scratch\n")
    plan = plan_build(settings(tmp_path, build_context=tmp_path / "app"))
    assert plan.build_args == {}


def test_git_revision_of_this_checkout_and_of_no_checkout(tmp_path: Path) -> None:
    here = git_revision(Path(__file__).parent)
    assert here is None or len(here) == 40
    assert git_revision(tmp_path) is None


def test_push_error_finds_every_error_chunk() -> None:
    assert [push_error(c) for c in PUSH_OK] == [None] * len(PUSH_OK)
    assert push_error(PUSH_UNAUTHORIZED[-1]) == "unauthorized: authentication required"
    assert push_error(PUSH_ERROR_DETAIL_ONLY[-1]) == "blob upload unknown"


def test_successful_stream_gives_the_digest_and_layer_progress() -> None:
    seen: list[LayerProgress] = []
    pushed = read_push_stream(REF, PUSH_OK, seen.append)
    assert pushed.digest == DIGEST
    pushing = [p for p in seen if p.status == "Pushing"]
    assert pushing == [LayerProgress(id="8b2113449b5a", status="Pushing", current=512, total=1228)]


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        (PUSH_UNAUTHORIZED, "unauthorized: authentication required"),
        (PUSH_UNREACHABLE, "connection refused"),
        (PUSH_ERROR_DETAIL_ONLY, "blob upload unknown"),
        (PUSH_TRUNCATED, "ended without a digest"),
    ],
    ids=["wrong-password", "registry-unreachable", "errorDetail-only", "no-digest"],
)
def test_failed_stream_raises_push_error(chunks: list[dict[str, Any]], expected: str) -> None:
    with pytest.raises(PushError) as caught:
        read_push_stream(REF, chunks)
    assert expected in str(caught.value)
    assert str(REF) in str(caught.value)


def test_unauthorized_hint_points_at_the_credentials() -> None:
    with pytest.raises(PushError) as caught:
        read_push_stream(REF, PUSH_UNAUTHORIZED)
    assert "registry_password" in caught.value.hint


# Recorded from dockerd 20.10's classic builder (docker SDK, decode=True).
BUILD_FAILING = [
    {"stream": "Step 1/4 : FROM scratch"},
    {"stream": "\n"},
    {"stream": " ---> \n"},
    {"stream": "Step 2/4 : COPY busybox /bin/busybox"},
    {"stream": "\n"},
    {"stream": " ---> 8b2113449b5a\n"},
    {"stream": "Step 3/4 : RUN echo hello from step three && ls /nope"},
    {"stream": "\n"},
    {"stream": " ---> Running in 41783a8bd41f\n"},
    {"stream": "hello from step three\n"},
    {"stream": "\u001b[91mls: /nope: No such file or directory\n\u001b[0m"},
    {
        "errorDetail": {
            "code": 1,
            "message": "The command '/bin/sh -c echo hello from step three && ls /nope' "
            "returned a non-zero code: 1",
        },
        "error": "The command '/bin/sh -c echo hello from step three && ls /nope' "
        "returned a non-zero code: 1",
    },
]
BUILD_OK = [
    *BUILD_FAILING[:6],
    {"stream": "Step 3/4 : RUN echo hi"},
    {"stream": "\n"},
    {"stream": " ---> Running in 41783a8bd41f\n"},
    {"stream": "hi\n"},
    {"stream": "Removing intermediate container 41783a8bd41f\n"},
    {"stream": " ---> 0f0e6d3c1b2a\n"},
    {"stream": 'Step 4/4 : CMD ["sh"]'},
    {"stream": "\n"},
    {"aux": {"ID": "sha256:bb0ee5583b0cfcff674b5409ab8e0dd00b2d9861592c1f2ddf5f7734496d361c"}},
    {"stream": "Successfully built bb0ee5583b0c\n"},
]


def test_build_log_reports_steps_and_output() -> None:
    log = BuildLog()
    steps, lines = [], []
    for chunk in BUILD_OK:
        step, new_lines = log.feed(chunk)
        if step:
            steps.append((step.number, step.total, step.instruction))
        lines += new_lines
    assert steps == [
        (1, 4, "FROM scratch"),
        (2, 4, "COPY busybox /bin/busybox"),
        (3, 4, "RUN echo hi"),
        (4, 4, 'CMD ["sh"]'),
    ]
    assert lines == ["hi"]
    assert log.image_id == "sha256:bb0ee5583b0cfcff674b5409ab8e0dd00b2d9861592c1f2ddf5f7734496d361c"


def test_build_error_names_the_step_and_carries_its_output() -> None:
    log = BuildLog()
    with pytest.raises(BuildError) as caught:
        for chunk in BUILD_FAILING:
            log.feed(chunk)
    message = str(caught.value)
    assert message.startswith("step 3/4 (RUN echo hello from step three && ls /nope) failed: ")
    assert message.endswith(") failed: exit code 1")
    assert caught.value.context["output"] == [
        "hello from step three",
        "ls: /nope: No such file or directory",
    ]


def test_a_version_tag_is_never_moved_to_another_image() -> None:
    """Recorded: two pushes in one minute moved v1-…-HHMM from a good image to a broken one."""
    registry = {"v1-20261130-1142": "sha256:good", "v1-20261130-1142-2": "sha256:other"}
    assert free_version_tag("v1-20261130-1142", registry.get, "sha256:broken") == (
        "v1-20261130-1142-3"
    )
    # The same image again keeps its tag; a free tag is used as it is.
    assert free_version_tag("v1-20261130-1142", registry.get, "sha256:good") == "v1-20261130-1142"
    assert free_version_tag("v1-20261130-1143", registry.get, None) == "v1-20261130-1143"
    # Unknown digest (no earlier tag in this push): an existing tag is never reused.
    assert free_version_tag("v1-20261130-1142", registry.get, None) == "v1-20261130-1142-3"
    assert VERSION_TAG.match("v1-20261130-1142-3") and not VERSION_TAG.match("latest")


# --- first-contact hints, from recorded classic-builder streams ------------------------

PROXY_BUILD = [
    {"stream": "Step 5/12 : RUN pip install --no-cache-dir /src\n"},
    {"stream": " ---> Running in 0a1b2c3d4e5f\n"},
    {
        "stream": "WARNING: Retrying (Retry(total=4, connect=None, read=None, redirect=None, "
        "status=None)) after connection broken by 'SSLError(SSLCertVerificationError(1, "
        "'[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed "
        "certificate in certificate chain (_ssl.c:1006)'))': /simple/fastapi/\n"
    },
    {
        "errorDetail": {"code": 1, "message": "The command '/bin/sh -c pip install' "
                        "returned a non-zero code: 1"},
        "error": "The command '/bin/sh -c pip install' returned a non-zero code: 1",
    },
]  # fmt: skip
PULL_FAILED = [
    {"stream": "Step 1/12 : ARG BASE_IMAGE=python:3.11-slim\n"},
    {"stream": "Step 2/12 : FROM ${BASE_IMAGE} AS build\n"},
    {
        "errorDetail": {"message": "Get \"https://registry-1.docker.io/v2/\": dial tcp: "
                        "lookup registry-1.docker.io: no such host"},
        "error": "Get \"https://registry-1.docker.io/v2/\": dial tcp: lookup "
        "registry-1.docker.io: no such host",
    },
]  # fmt: skip


def _failure(chunks: list[dict[str, object]]) -> BuildError:
    log = BuildLog()
    with pytest.raises(BuildError) as caught:
        for chunk in chunks:
            log.feed(chunk)
    return caught.value


def test_a_proxy_ca_failure_hints_extra_ca_crt() -> None:
    """Seen: pip's CERTIFICATE_VERIFY_FAILED hinted "Fix the failing step in the Dockerfile"."""
    error = _failure(PROXY_BUILD)
    assert "step 5/12" in error.message and "app/extra-ca.crt" in error.hint


def test_a_base_image_that_cannot_be_pulled_hints_manifest_base_image() -> None:
    error = _failure(PULL_FAILED)
    assert "step 2/12" in error.message and "MANIFEST_BASE_IMAGE" in error.hint


def test_any_other_failing_step_keeps_the_default_hint() -> None:
    error = _failure([{"stream": "Step 3/3 : RUN false\n"}, {"error": "exit 1"}])
    assert error.hint == BuildError.default_hint


APP_DOCKERFILE = Path(__file__).resolve().parents[2] / "app" / "Dockerfile"


def test_the_apps_dockerfile_takes_every_label_as_a_build_arg(tmp_path: Path) -> None:
    """All labels in its one LABEL step; through the API they would be 4 more build steps."""
    plan = plan_build(settings(tmp_path, build_context=APP_DOCKERFILE.parent))
    labels = {**plan.labels, "org.opencontainers.image.revision": "0" * 40}
    args, api_labels = label_transport(labels, APP_DOCKERFILE.read_text(encoding="utf-8"))
    assert api_labels == {}
    assert args == {LABEL_ARGS[key]: value for key, value in labels.items()}
    assert set(args) == {"OCI_CREATED", "OCI_TITLE", "OCI_VERSION", "OCI_REVISION"}


@pytest.mark.parametrize(
    "dockerfile",
    [
        "FROM scratch\n",
        "FROM scratch\nARG OCI_CREATED OCI_TITLE\n",  # not every label's argument
        "FROM scratch\n# ARG OCI_CREATED OCI_TITLE OCI_VERSION\n",
    ],
    ids=["none", "some", "commented-out"],
)
def test_a_dockerfile_without_the_label_args_gets_the_apis_labels(dockerfile: str) -> None:
    labels = {
        "org.opencontainers.image.created": "2026-11-30T14:00:00Z",
        "org.opencontainers.image.title": "studenten/manifest-app",
        "org.opencontainers.image.version": "v1-20261130-1400",
    }
    assert label_transport(labels, dockerfile) == ({}, labels)


@pytest.mark.parametrize(
    ("engine_api", "spoken"),
    [
        ("1.41", "1.41"),  # dockerd 20.10: its own
        ("1.24", "1.24"),
        ("1.99", "SDK"),  # newer than the SDK: the SDK's
        ("", None),  # no header: the SDK asks GET /version
        (None, None),
        ("garbage", None),
    ],
)
def test_the_api_version_is_the_lower_of_the_engines_and_the_sdks(
    engine_api: str | None, spoken: str | None
) -> None:
    from docker.constants import DEFAULT_DOCKER_API_VERSION

    expected = DEFAULT_DOCKER_API_VERSION if spoken == "SDK" else spoken
    assert negotiated_version(engine_api) == expected
