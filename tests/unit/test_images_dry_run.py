"""`--dry-run` prints the whole plan and needs nothing: no engine, no registry, no cluster."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.support.inv import clean_env
from tests.support.inv import run_inv as inv

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "never-print-this-password"


def kubeconfig(folder: Path, current: str) -> Path:
    """A kubeconfig whose clusters do not exist: a dry run must not contact them."""
    contexts = "".join(
        f"- name: {name}\n  context: {{cluster: {name}, user: {name}}}\n"
        for name in ("docker-desktop", "prod-eu")
    )
    clusters = "".join(
        f"- name: {name}\n  cluster: {{server: 'https://127.0.0.1:9'}}\n"
        for name in ("docker-desktop", "prod-eu")
    )
    users = "".join(
        f"- name: {name}\n  user: {{token: x}}\n" for name in ("docker-desktop", "prod-eu")
    )
    path = folder / "kubeconfig"
    path.write_text(
        f"apiVersion: v1\nkind: Config\ncurrent-context: {current}\n"
        f"contexts:\n{contexts}clusters:\n{clusters}users:\n{users}",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "Dockerfile").write_text("FROM scratch\n", encoding="utf-8")
    (tmp_path / ".env").touch()
    return tmp_path


def run_inv(
    workdir: Path, *args: str, current: str = "docker-desktop"
) -> subprocess.CompletedProcess[str]:
    env = clean_env()
    env.update(
        COLUMNS="200",
        DOCKER_HOST=f"unix://{workdir}/no-engine.sock",
        KUBECONFIG=str(kubeconfig(workdir, current)),
        MANIFEST_REGISTRY_USERNAME="ci-robot",
        MANIFEST_REGISTRY_PASSWORD=PASSWORD,
    )
    return inv(*args, env=env, cwd=workdir, timeout=60)


def plan_of(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    assert result.returncode == 0, result.stderr
    assert PASSWORD not in result.stdout + result.stderr
    rows = [
        re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in result.stdout.splitlines()[1:]
    ]
    return {row[0]: row[1] for row in rows if len(row) == 2}


def test_pipeline_plan_names_everything(workdir: Path) -> None:
    result = run_inv(workdir, "pipeline", "--dry-run", "--tag", "rc1", "--namespace", "staging")
    assert result.stdout.startswith("pipeline would:")
    plan = plan_of(result)
    assert plan["image"] == "localhost:30002/studenten/manifest-app"
    assert re.fullmatch(r"latest, v1-\d{8}-\d{4}, rc1  \(version tag in UTC\)", plan["tags"])
    assert plan["builder"] == "classic (the docker SDK cannot drive BuildKit)"
    assert plan["push"] == "to localhost:30002"
    assert plan["login"] == "ci-robot"
    assert plan["rollout image"] == (
        "localhost:30002/studenten/manifest-app@<digest of the push> (immutable)"
    )
    assert (plan["context"], plan["namespace"], plan["Deployment"]) == (
        "docker-desktop",
        "staging",
        "manifest-app",
    )


def test_pipeline_refuses_a_context_off_the_allow_list_before_building(workdir: Path) -> None:
    result = run_inv(workdir, "pipeline", "--dry-run", current="prod-eu")
    assert result.returncode == 2
    assert "kube context 'prod-eu' is not on the allow-list" in result.stderr
    assert "--context prod-eu" in result.stderr
    assert "Traceback" not in result.stderr


def test_naming_the_context_explicitly_allows_it(workdir: Path) -> None:
    plan = plan_of(run_inv(workdir, "rollout.restart", "--dry-run", "--context", "prod-eu"))
    assert plan["context"] == "prod-eu"
    assert plan["action"] == "restart (patch kubectl.kubernetes.io/restartedAt), then wait"
    assert plan["on failure"] == "stop and report (--undo-on-failure rolls back)"


def test_the_restart_plan_says_a_failed_rollout_is_rolled_back(workdir: Path) -> None:
    """--undo-on-failure is part of the plan (its work carries it to the act), not a flag
    the act is handed beside it."""
    plan = plan_of(run_inv(workdir, "rollout.restart", "--dry-run", "--undo-on-failure"))
    assert plan["on failure"] == "roll back to the previous revision"
    piped = plan_of(run_inv(workdir, "pipeline", "--dry-run", "--undo-on-failure"))
    assert piped["on failure"] == "roll back to the previous revision"


def test_image_build_and_push_plans(workdir: Path) -> None:
    base = "localhost:30002/lab/python:3.11"
    build = plan_of(run_inv(workdir, "image.build", "--dry-run", "--base-image", base))
    assert build["build args"] == f"BASE_IMAGE={base}"
    push = plan_of(run_inv(workdir, "image.push", "--dry-run"))
    assert (push["registry"], push["login"]) == ("localhost:30002", "ci-robot")
