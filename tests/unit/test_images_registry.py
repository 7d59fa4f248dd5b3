"""ops.registry against a fake Harbor-style registry (Bearer tokens), on 127.0.0.1.

The lab's registry (distribution + htpasswd) answers with Basic auth, which the integration
tests cover; Harbor, the seed's registry, hands out Bearer tokens instead. No Harbor can run
here, so this small HTTP server plays its token dance; its name says it is a fake.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar
from urllib.parse import parse_qs, urlparse

import pytest

from ops.errors import RegistryError
from ops.registry import Registry, RegistrySession, check, manifest_digest
from tests.support.registry import list_tags, require_login

USER, PASSWORD, TOKEN = "robot$ci", "s3cret", "token-for-pull"
DIGEST = "sha256:" + "ab" * 32
MANIFEST = b'{"schemaVersion": 2, "layers": []}\n'
MANIFEST_DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"


class FakeHarborHandler(BaseHTTPRequestHandler):
    scopes: ClassVar[list[str]] = []
    stored: ClassVar[dict[str, tuple[str, bytes]]] = {}  # tag: (Content-Type, body) PUT

    def log_message(self, *args: object) -> None:  # keep pytest's output clean
        pass

    def _send(self, code: int, body: dict[str, object] | None = None, **headers: str) -> None:
        self.send_response(code)
        self.send_header("Docker-Distribution-Api-Version", "registry/2.0")
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        payload = json.dumps(body or {}).encode()
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _challenge(self) -> None:
        host = self.headers["Host"]
        self._send(
            401,
            {"errors": [{"code": "UNAUTHORIZED"}]},
            WWW_Authenticate=f'Bearer realm="http://{host}/service/token",service="harbor-registry"',
        )

    def do_GET(self) -> None:
        url = urlparse(self.path)
        if url.path == "/service/token":
            basic = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            if self.headers.get("Authorization") != f"Basic {basic}":
                self._send(401, {"errors": [{"code": "UNAUTHORIZED"}]})
                return
            query = parse_qs(url.query)
            assert query["service"] == ["harbor-registry"]
            self.scopes.append(query.get("scope", [""])[0])
            self._send(200, {"token": TOKEN})
            return
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self._challenge()
            return
        if url.path == "/v2/":
            self._send(200)
        elif url.path == f"/v2/studenten/manifest-app/manifests/{MANIFEST_DIGEST}":
            self.send_response(200)
            self.send_header("Content-Type", MANIFEST_TYPE)
            self.send_header("Docker-Content-Digest", MANIFEST_DIGEST)
            self.send_header("Content-Length", str(len(MANIFEST)))
            self.end_headers()
            self.wfile.write(MANIFEST)
        elif url.path == "/v2/studenten/manifest-app/tags/list":
            self._send(
                200, {"name": "studenten/manifest-app", "tags": ["v1-20261126-0705", "latest"]}
            )
        else:
            self._send(404, {"errors": [{"code": "NAME_UNKNOWN"}]})

    def do_HEAD(self) -> None:
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self._challenge()
        elif self.path == "/v2/studenten/manifest-app/manifests/latest":
            assert "application/vnd.oci.image.index.v1+json" in self.headers["Accept"]
            self._send(200, Docker_Content_Digest=DIGEST)
        else:
            self._send(404)

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self._challenge()
            return
        prefix = "/v2/studenten/manifest-app/manifests/"
        assert self.path.startswith(prefix)
        self.stored[self.path.removeprefix(prefix)] = (self.headers["Content-Type"], body)
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        self._send(201, Docker_Content_Digest=digest)


@pytest.fixture
def fake_harbor() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHarborHandler)
    FakeHarborHandler.scopes = []
    FakeHarborHandler.stored = {}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_login_with_a_bearer_token(fake_harbor: str) -> None:
    result = require_login(Registry(host=fake_harbor, username=USER, password=PASSWORD))
    assert result.login == "accepted"
    assert result.url == f"http://{fake_harbor}"  # localhost: plain http, as docker allows


def test_wrong_password_and_no_credentials(fake_harbor: str) -> None:
    assert check(Registry(host=fake_harbor, username=USER, password="nope")).login == "refused"
    assert check(Registry(host=fake_harbor)).login == "no credentials"
    with pytest.raises(RegistryError, match="refused the login of 'robot\\$ci'"):
        require_login(Registry(host=fake_harbor, username=USER, password="nope"))


def test_tags_and_digest_ask_for_a_pull_scope(fake_harbor: str) -> None:
    registry = Registry(host=fake_harbor, username=USER, password=PASSWORD)
    assert list_tags(registry, "studenten/manifest-app") == ["latest", "v1-20261126-0705"]
    assert manifest_digest(registry, "studenten/manifest-app", "latest") == DIGEST
    assert manifest_digest(registry, "studenten/manifest-app", "gone") is None
    assert list_tags(registry, "studenten/other") == []
    assert "repository:studenten/manifest-app:pull" in FakeHarborHandler.scopes


def test_a_session_fetches_each_scopes_token_once(fake_harbor: str) -> None:
    """One push checks the login, then looks up and writes tags: one token per scope."""
    registry = Registry(host=fake_harbor, username=USER, password=PASSWORD)
    with RegistrySession(registry) as session:
        assert session.check().login == "accepted"
        assert session.manifest_digest("studenten/manifest-app", "latest") == DIGEST
        assert session.manifest_digest("studenten/manifest-app", "gone") is None
        assert session.manifest_digest("studenten/manifest-app", "latest") == DIGEST
    assert FakeHarborHandler.scopes == ["", "repository:studenten/manifest-app:pull"]


def test_tag_manifest_puts_the_same_bytes_under_the_new_tag(fake_harbor: str) -> None:
    registry = Registry(host=fake_harbor, username=USER, password=PASSWORD)
    with RegistrySession(registry) as session:
        stored = session.tag_manifest("studenten/manifest-app", MANIFEST_DIGEST, "v1-x")
    assert stored == MANIFEST_DIGEST
    assert FakeHarborHandler.stored == {"v1-x": (MANIFEST_TYPE, MANIFEST)}
    assert FakeHarborHandler.scopes == ["repository:studenten/manifest-app:pull,push"]


def test_tag_manifest_of_an_unknown_digest_is_one_registry_error(fake_harbor: str) -> None:
    registry = Registry(host=fake_harbor, username=USER, password=PASSWORD)
    with RegistrySession(registry) as session, pytest.raises(RegistryError) as caught:
        session.tag_manifest("studenten/manifest-app", DIGEST, "v1-x")
    assert "HTTP 404" in str(caught.value) and f"@{DIGEST} as v1-x" in str(caught.value)
    assert FakeHarborHandler.stored == {}
