"""The kubeconfig read without the kubernetes package (ops.kubeconfig): contexts merged as
kubectl merges them, and which contexts get the direct exec door."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest

from ops.errors import ContextError
from ops.kubeconfig import exec_door, load


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def self_signed_ca(folder: Path) -> Path:
    key, cert = folder / "ca.key", folder / "ca.crt"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=test-ca",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert


CONFIG = """\
apiVersion: v1
kind: Config
current-context: {current}
clusters:
- name: lab
  cluster: {{server: "https://127.0.0.1:6443", certificate-authority: ca.crt}}
users:
- name: token
  user: {{token: "secret-token"}}
- name: plugin
  user:
    exec: {{apiVersion: client.authentication.k8s.io/v1, command: get-token}}
contexts:
- name: {first}
  context: {{cluster: lab, user: token}}
- name: sso
  context: {{cluster: lab, user: plugin}}
"""


def test_several_files_merge_first_name_wins(tmp_path, monkeypatch):
    a = write(tmp_path / "a", CONFIG.format(current="one", first="one"))
    b = write(tmp_path / "b", CONFIG.format(current="two", first="two"))
    monkeypatch.setenv("KUBECONFIG", f"{a}:{tmp_path / 'absent'}:{b}")
    config = load(None)
    assert list(config.contexts) == ["one", "sso", "two"]
    assert config.current == "one"


def test_no_readable_file_is_one_clear_error(tmp_path):
    with pytest.raises(ContextError, match="no usable kubeconfig"):
        load(tmp_path / "absent")
    with pytest.raises(ContextError, match="not YAML"):
        load(write(tmp_path / "bad", "clusters: [\n"))


def test_a_token_context_gets_the_door_with_its_ca_file_relative_to_the_kubeconfig(tmp_path):
    self_signed_ca(tmp_path)
    path = write(tmp_path / "config", CONFIG.format(current="one", first="one"))
    door = exec_door(path, "one")
    assert door is not None
    assert door.base_url == "wss://127.0.0.1:6443"
    assert door.headers == ("authorization: Bearer secret-token",)
    assert [c["subject"] for c in door.ssl_context.get_ca_certs()] == [
        ((("commonName", "test-ca"),),)
    ]


def test_inline_ca_data_is_used_too(tmp_path):
    ca = self_signed_ca(tmp_path)
    data = base64.b64encode(ca.read_bytes()).decode()
    text = CONFIG.format(current="one", first="one").replace(
        "certificate-authority: ca.crt", f"certificate-authority-data: {data}"
    )
    ca.unlink()
    door = exec_door(write(tmp_path / "config", text), "one")
    assert door is not None and len(door.ssl_context.get_ca_certs()) == 1


def test_an_auth_plugin_or_a_proxy_goes_through_the_kubernetes_client(tmp_path, monkeypatch):
    self_signed_ca(tmp_path)
    path = write(tmp_path / "config", CONFIG.format(current="one", first="one"))
    assert exec_door(path, "sso") is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")
    assert exec_door(path, "one") is None
