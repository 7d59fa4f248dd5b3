"""Harbor's login for real: the lab's token-auth registry (lab/labkit/harbor.py, localhost:30003).

The registry answers with a Bearer challenge; the docker engine, containerd (for the kubelet)
and our tasks fetch an RS256 token from the lab's token server with the Harbor-style robot
account `robot$studenten+ci` (pull and push on project studenten) or the pull-only member
`studenten-reader`. The `$` and `+` of the robot's name go through .env, the docker SDK's
auth header, harbor-regcred's .dockerconfigjson and containerd's token request.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ops.registry import Registry as OpsRegistry
from ops.registry import manifest_digest
from tests.e2e.conftest import wait_until
from tests.support.inv import clean_env, run_inv
from tests.support.registry import list_tags
from tests.support.services import missing

pytestmark = pytest.mark.e2e

ROBOT = "robot$studenten+ci"


@dataclass(frozen=True, kw_only=True)
class Harbor:
    """The lab's token-auth registry, its two accounts and the CA of its TLS certificate."""

    host: str
    robot: str
    robot_password: str = field(repr=False)
    reader: str
    reader_password: str = field(repr=False)
    ca: Path

    def as_robot(self) -> OpsRegistry:
        return OpsRegistry(
            host=self.host, username=self.robot, password=self.robot_password, ca_file=self.ca
        )

    def as_reader(self) -> OpsRegistry:
        return OpsRegistry(
            host=self.host, username=self.reader, password=self.reader_password, ca_file=self.ca
        )


@pytest.fixture(scope="session")
def harbor() -> Harbor:
    names = [
        "MANIFEST_TEST_HARBOR_REGISTRY",
        "MANIFEST_TEST_HARBOR_ROBOT_USER",
        "MANIFEST_TEST_HARBOR_ROBOT_PASSWORD_FILE",
        "MANIFEST_TEST_HARBOR_READER_USER",
        "MANIFEST_TEST_HARBOR_READER_PASSWORD_FILE",
        "MANIFEST_TEST_REGISTRY_CA",
    ]
    values = {name: os.environ.get(name, "") for name in names}
    absent = [name for name, value in values.items() if not value]
    if absent:
        missing(f"{', '.join(absent)} not set (python3 lab/lab.py harbor-up; source the lab env)")
    files = [Path(values[n]) for n in names if n.endswith("_FILE")]
    if not all(f.is_file() for f in files):
        missing(f"the token registry's password files are missing: {files}")
    import requests

    host, ca = values["MANIFEST_TEST_HARBOR_REGISTRY"], values["MANIFEST_TEST_REGISTRY_CA"]
    try:
        challenge = requests.get(f"https://{host}/v2/", verify=ca, timeout=5)
    except requests.RequestException as exc:
        missing(f"the token registry at {host} does not answer: {exc}")
    if not challenge.headers.get("WWW-Authenticate", "").startswith("Bearer "):
        missing(f"{host} does not answer with a Bearer challenge (HTTP {challenge.status_code})")
    return Harbor(
        host=values["MANIFEST_TEST_HARBOR_REGISTRY"],
        robot=values["MANIFEST_TEST_HARBOR_ROBOT_USER"],
        robot_password=files[0].read_text().strip(),
        reader=values["MANIFEST_TEST_HARBOR_READER_USER"],
        reader_password=files[1].read_text().strip(),
        ca=Path(values["MANIFEST_TEST_REGISTRY_CA"]),
    )


@dataclass
class Workspace:
    """A project folder whose .env points the tasks at the token registry as `user`."""

    folder: Path
    repository: str
    context: str
    namespace: str

    def inv(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return run_inv(*args, cwd=self.folder, env=clean_env(), timeout=timeout)

    def cluster_inv(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.inv(*args, "--context", self.context, "--namespace", self.namespace)


def workspace(
    folder: Path, harbor: Harbor, *, user: str, password: str, context: str, namespace: str
) -> Workspace:
    repository = f"studenten/e2e-{uuid.uuid4().hex[:10]}"
    # Unquoted, as a user writes it: python-dotenv expands only ${NAME}, so `$` stays.
    (folder / ".env").write_text(
        f"MANIFEST_REGISTRY={harbor.host}\n"
        f"MANIFEST_REGISTRY_USERNAME={user}\n"
        f"MANIFEST_REGISTRY_CA_FILE={harbor.ca}\n"
        f"MANIFEST_IMAGE_REPOSITORY={repository}\n"
    )
    secrets = folder / "secrets"
    secrets.mkdir()
    (secrets / "registry_password.txt").write_text(password + "\n")
    (secrets / "db_username.txt").write_text("app_user\n")
    (secrets / "db_password.txt").write_text("e2e-db-" + os.urandom(8).hex() + "\n")
    return Workspace(folder=folder, repository=repository, context=context, namespace=namespace)


def tag_local(docker_client: Any, image: str, ws: Workspace, harbor: Harbor) -> str:
    """The app image tagged as the workspace's `latest` in the token registry."""
    target = f"{harbor.host}/{ws.repository}"
    assert docker_client.images.get(image).tag(target, "latest")
    return f"{target}:latest"


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one stderr line of a failed task (no traceback)."""
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def doctor_line(result: subprocess.CompletedProcess[str], check: str) -> str:
    (line,) = [
        line for line in result.stdout.splitlines() if line[2:].startswith(check.ljust(14) + " ")
    ]
    return line


def run_pod(core_v1: Any, namespace: str, name: str, image: str, *, secret: str | None) -> None:
    from kubernetes import client

    core_v1.create_namespaced_pod(
        namespace,
        client.V1Pod(
            metadata=client.V1ObjectMeta(name=name),
            spec=client.V1PodSpec(
                restart_policy="Never",
                image_pull_secrets=[client.V1LocalObjectReference(name=secret)] if secret else None,
                containers=[
                    client.V1Container(
                        name="app",
                        image=image,
                        image_pull_policy="Always",
                        command=["python", "-c", "import student_api; print('app image runs')"],
                    )
                ],
            ),
        ),
    )


def test_robot_pushes_and_the_kubelet_pulls_through_harbor_regcred(
    harbor: Harbor,
    app_image: str,
    docker_client: Any,
    core_v1: Any,
    namespace: str,
    kube_context: str,
    tmp_path: Path,
) -> None:
    ws = workspace(
        tmp_path,
        harbor,
        user=ROBOT,
        password=harbor.robot_password,
        context=kube_context,
        namespace=namespace,
    )
    image = tag_local(docker_client, app_image, ws, harbor)
    try:
        doctor = ws.cluster_inv("doctor")
        assert f"accepted for '{ROBOT}'" in doctor_line(doctor, "registry login"), doctor.stdout
        assert doctor_line(doctor, "registry push").startswith("✓"), doctor.stdout

        pushed = ws.inv("image.push")
        assert pushed.returncode == 0, pushed.stdout + pushed.stderr
        assert list_tags(harbor.as_robot(), ws.repository) == ["latest"]
        assert list_tags(harbor.as_reader(), ws.repository) == ["latest"]  # guest: pull
        digest = manifest_digest(harbor.as_robot(), ws.repository, "latest")
        assert digest and digest in pushed.stdout

        applied = ws.cluster_inv("secrets.apply")
        assert applied.returncode == 0, applied.stdout + applied.stderr
        assert "harbor-regcred: created" in applied.stdout
        assert harbor.robot_password not in applied.stdout + applied.stderr + doctor.stdout
    finally:
        docker_client.images.remove(image)
    secret = core_v1.read_namespaced_secret("harbor-regcred", namespace)
    auth = json.loads(base64.b64decode(secret.data[".dockerconfigjson"]))["auths"][harbor.host]
    assert auth["username"] == ROBOT
    assert base64.b64decode(auth["auth"]).decode() == f"{ROBOT}:{harbor.robot_password}"

    run_pod(core_v1, namespace, "with-regcred", image, secret="harbor-regcred")
    run_pod(core_v1, namespace, "anonymous", image, secret=None)

    def phase(name: str) -> str:
        return str(core_v1.read_namespaced_pod(name, namespace).status.phase)

    wait_until(lambda: phase("with-regcred") == "Succeeded", timeout=180, what="the pulled pod")
    assert "app image runs" in core_v1.read_namespaced_pod_log("with-regcred", namespace)
    pod = core_v1.read_namespaced_pod("with-regcred", namespace)
    assert pod.status.container_statuses[0].image_id.endswith(digest)

    def waiting_reason() -> str:
        statuses = core_v1.read_namespaced_pod("anonymous", namespace).status.container_statuses
        waiting = statuses[0].state.waiting if statuses else None
        return str(waiting.reason) if waiting else ""

    wait_until(
        lambda: waiting_reason() in ("ErrImagePull", "ImagePullBackOff"),
        timeout=60,
        what="the pod without a pull secret to fail its pull",
    )
    assert phase("anonymous") == "Pending"


def test_pull_only_user_cannot_push(
    harbor: Harbor,
    app_image: str,
    docker_client: Any,
    namespace: str,
    kube_context: str,
    tmp_path: Path,
) -> None:
    ws = workspace(
        tmp_path,
        harbor,
        user=harbor.reader,
        password=harbor.reader_password,
        context=kube_context,
        namespace=namespace,
    )
    image = tag_local(docker_client, app_image, ws, harbor)
    try:
        line = error_line(ws.inv("image.push"))
        doctor = ws.cluster_inv("doctor")
    finally:
        docker_client.images.remove(image)
    assert f"does not let '{harbor.reader}' push to {ws.repository}" in line
    assert doctor_line(doctor, "registry login").startswith("✓")
    assert "may not push" in doctor_line(doctor, "registry push")
    assert doctor.returncode == 1
    assert list_tags(harbor.as_robot(), ws.repository) == []


def test_wrong_password_is_one_clear_line(
    harbor: Harbor,
    app_image: str,
    docker_client: Any,
    namespace: str,
    kube_context: str,
    tmp_path: Path,
) -> None:
    wrong = "wrong-" + os.urandom(8).hex()
    ws = workspace(
        tmp_path, harbor, user=ROBOT, password=wrong, context=kube_context, namespace=namespace
    )
    image = tag_local(docker_client, app_image, ws, harbor)
    try:
        result = ws.inv("image.push")
        doctor = ws.cluster_inv("doctor")
    finally:
        docker_client.images.remove(image)
    line = error_line(result)
    assert f"refused the login of '{ROBOT}'" in line
    assert list_tags(harbor.as_robot(), ws.repository) == []
    assert f"refused for '{ROBOT}'" in doctor_line(doctor, "registry login")
    assert wrong not in result.stdout + result.stderr + doctor.stdout + doctor.stderr


def test_token_server_takes_the_user_from_basic_auth_not_account(harbor: Harbor) -> None:
    """`account=robot$studenten+ci` form-decodes to `robot$studenten ci`; Basic auth does not."""
    import requests

    challenge = requests.get(f"https://{harbor.host}/v2/", verify=str(harbor.ca), timeout=10)
    assert challenge.status_code == 401
    params = dict(re.findall(r'(\w+)="([^"]*)"', challenge.headers["WWW-Authenticate"]))
    url, service = params["realm"], params["service"]
    query = f"service={service}&scope=repository:studenten/x:pull,push"
    answer = requests.get(
        f"{url}?{query}&account={ROBOT}",
        auth=(harbor.robot, harbor.robot_password),
        verify=str(harbor.ca),
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    claims = json.loads(base64.urlsafe_b64decode(answer.json()["token"].split(".")[1] + "=="))
    assert claims["sub"] == ROBOT
    assert claims["access"] == [
        {"type": "repository", "name": "studenten/x", "actions": ["pull", "push"]}
    ]
    anonymous = requests.get(f"{url}?{query}", verify=str(harbor.ca), timeout=10)
    assert anonymous.json() and anonymous.status_code == 200
    claims = json.loads(base64.urlsafe_b64decode(anonymous.json()["token"].split(".")[1] + "=="))
    assert claims["access"] == [{"type": "repository", "name": "studenten/x", "actions": []}]
