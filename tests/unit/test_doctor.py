"""How the doctor's report reads, and its secrets-files check (no services needed)."""

from __future__ import annotations

from pathlib import Path

from ops.config import load_settings
from ops.doctor import (
    Check,
    _secret_files,
    _short_connection_error,
    failed,
    ingress_check,
    render,
)


def test_render_marks_hints_and_summary() -> None:
    checks = [
        Check(name="Docker engine", outcome="ok", detail="20.10.24 (API 1.41, linux/amd64)"),
        Check(
            name="registry",
            outcome="fail",
            detail="registry localhost:30002 is unreachable (connection refused)",
            hint="Check that the registry runs.",
        ),
        Check(name="registry login", outcome="skip", detail="skipped: registry unreachable"),
    ]
    assert render(checks) == [
        "✓ Docker engine   20.10.24 (API 1.41, linux/amd64)",
        "✗ registry        registry localhost:30002 is unreachable (connection refused)\n"
        "                  hint: Check that the registry runs.",
        "- registry login  skipped: registry unreachable",
        "1 ok, 1 failed, 1 skipped",
    ]
    assert failed(checks)


def test_all_ok_is_not_failed() -> None:
    checks = [Check(name="cluster", outcome="ok", detail="Kubernetes v1.34.4")]
    assert render(checks)[-1] == "1 ok, 0 failed"
    assert not failed(checks)


def make_settings(tmp_path: Path, **values: object):
    env_file = tmp_path / "empty.env"
    env_file.touch()
    return load_settings(
        {"secrets_dir": tmp_path / "secrets", **values}, env_file=env_file, environ={}
    )


def test_secret_files_follow_the_templates(tmp_path: Path) -> None:
    (tmp_path / "secrets.example").mkdir()
    for name in ("db_password.txt.example", "registry_password.txt", "README.md"):
        (tmp_path / "secrets.example" / name).write_text("x")
    (tmp_path / "secrets").mkdir()
    check = _secret_files(make_settings(tmp_path), tmp_path)
    assert check.outcome == "fail"
    assert check.detail.endswith("db_password.txt, registry_password.txt")

    (tmp_path / "secrets" / "db_password.txt").write_text("s3cret")
    from_env = make_settings(tmp_path, registry_password="given-elsewhere")
    check = _secret_files(from_env, tmp_path)
    assert check.outcome == "ok", check.detail
    assert "given-elsewhere" not in check.detail


def test_unreachable_cluster_is_said_briefly() -> None:
    urllib3_text = (
        "cannot reach the Kubernetes API (MaxRetryError: HTTPSConnectionPool(host='127.0.0.1', "
        "port=9): Max retries exceeded with url: /version/ (Caused by NewConnectionError("
        "\"HTTPSConnection(host='127.0.0.1', port=9): Failed to establish a new connection: "
        '[Errno 111] Connection refused")))'
    )
    assert _short_connection_error(urllib3_text) == (
        "cannot reach the Kubernetes API at 127.0.0.1:9 (connection refused)"
    )
    assert _short_connection_error("something else") == "something else"


def _ingress(address: dict[str, str] | None) -> dict[str, object]:
    """A manifest-app-ingress as the API returns it (sanitized), with or without an address
    published by a controller."""
    status = {"loadBalancer": {"ingress": [address]} if address else {}}
    return {
        "metadata": {"name": "manifest-app-ingress", "namespace": "development"},
        "spec": {
            "ingressClassName": "nginx",
            "rules": [{"host": "localhost", "http": {"paths": [
                {"path": "/api", "pathType": "Prefix"}, {"path": "/swagger", "pathType": "Prefix"},
            ]}}],
        },
        "status": status,
    }  # fmt: skip


def test_ingress_check_reports_the_published_address() -> None:
    check = ingress_check([_ingress({"ip": "127.0.0.1"})])
    assert check.outcome == "ok"
    assert check.detail == (
        "manifest-app-ingress: http://localhost/api, /swagger at 127.0.0.1 (class nginx)"
    )


def test_ingress_without_an_address_says_no_controller_serves_its_class() -> None:
    check = ingress_check([_ingress(None)])
    assert check.outcome == "fail"
    assert check.detail == "manifest-app-ingress (class nginx) has no address"
    assert "ingress controller" in check.hint


def test_no_ingress_is_skipped() -> None:
    assert ingress_check([]).outcome == "skip"
