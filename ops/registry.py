"""The image registry over its HTTP API (Docker Registry v2): reachability, login, digests.

Speaks https, trusting ``registry_ca_file`` when set and the system's CAs otherwise; for a
registry on localhost it falls back to plain http, as the Docker engine does. Handles both
auth schemes registries use: Basic (distribution with htpasswd) and Bearer tokens (Harbor).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urljoin

from ops.config import Settings
from ops.errors import RegistryError

if TYPE_CHECKING:
    import requests

Login = Literal["accepted", "refused", "anonymous", "no credentials"]

MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
    ]
)
_LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


@dataclass(frozen=True, kw_only=True)
class Registry:
    """Where the registry is and how to log in to it."""

    host: str
    username: str = ""
    password: str = field(default="", repr=False)
    ca_file: Path | None = None
    timeout: float = 5.0

    @classmethod
    def from_settings(cls, settings: Settings) -> Registry:
        return cls(
            host=settings.registry,
            username=settings.registry_username,
            password=settings.registry_password,
            ca_file=settings.registry_ca_file,
        )

    @property
    def is_local(self) -> bool:
        return self.host.rsplit(":", 1)[0] in _LOCAL_HOSTS or self.host.startswith("[::1]")


@dataclass(frozen=True, kw_only=True)
class RegistryCheck:
    """What ``GET /v2/`` said: which URL answered, and whether the login was accepted."""

    url: str
    login: Login


def check(registry: Registry) -> RegistryCheck:
    """Reach the registry and try the login; raises RegistryError only if it is unreachable."""
    with RegistrySession(registry) as session:
        return session.check()


def push_allowed(registry: Registry, repository: str) -> bool:
    """Whether the registry lets this login push to ``repository`` (see
    ``RegistrySession.push_allowed``)."""
    with RegistrySession(registry) as session:
        return session.push_allowed(repository)


def api_request(
    registry: Registry,
    method: str,
    path: str,
    *,
    scope: str = "",
    headers: dict[str, str] | None = None,
) -> requests.Response:
    """One request to the registry's API (``path`` such as ``/v2/<repo>/tags/list``), on
    whichever URL it answers, logged in with the registry's credentials."""
    with RegistrySession(registry) as session:
        return session.request(method, path, scope=scope, headers=headers)


def manifest_digest(registry: Registry, repository: str, tag: str) -> str | None:
    """The digest of the tag's manifest (``Docker-Content-Digest``), or None if there is no tag."""
    with RegistrySession(registry) as session:
        return session.manifest_digest(repository, tag)


class RegistrySession:
    """Several requests to one registry over one kept-alive connection.

    The URL it answers on is found once (the first request), and once the registry has
    challenged for a scheme, the login goes with every later request up front: Basic
    credentials, or the Bearer token already fetched for that scope. A push's check,
    version-tag lookups and manifest copies so cost one round trip each, not two or
    three plus a TLS handshake.
    """

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._http = _Http(registry)
        self._base: str | None = None
        self._probe: requests.Response | None = None  # the unauthenticated GET /v2/
        self._basic = False
        self._tokens: dict[str, str] = {}

    def __enter__(self) -> RegistrySession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.session.close()

    @property
    def base_url(self) -> str:
        """``https://host`` or, for a registry on localhost without TLS, ``http://host``."""
        if self._base is None:
            self._base, self._probe = _base_url(self.registry, self._http)
            challenge = self._probe.headers.get("WWW-Authenticate", "")
            # The probe's challenge already names the scheme: Basic goes up front from now on.
            self._basic = self._probe.status_code == 401 and challenge.lower().startswith("basic")
        return self._base

    def check(self) -> RegistryCheck:
        """Reach the registry and try the login; RegistryError only if it is unreachable."""
        base = self.base_url
        if not self.registry.username:
            anonymous = self._probe or self.request("GET", "/v2/", with_auth=False)
            login: Login = "anonymous" if anonymous.status_code == 200 else "no credentials"
            return RegistryCheck(url=base, login=login)
        response = self.request("GET", "/v2/")
        if response.status_code == 200:
            return RegistryCheck(url=base, login="accepted")
        if response.status_code in (401, 403):
            return RegistryCheck(url=base, login="refused")
        raise RegistryError(
            f"registry {self.registry.host} answered GET /v2/ with HTTP {response.status_code}",
            hint=f"Is {self.registry.host} really a Docker registry?",
        )

    def push_allowed(self, repository: str) -> bool:
        """Whether the registry lets this login push to ``repository``.

        Asked the only way every registry answers alike: start a blob upload (what a push
        does first) and cancel it at once. A token server (Harbor) grants push per project
        and role, so a pull-only account logs in fine and is refused only here.
        """
        scope = f"repository:{repository}:pull,push"
        started = self.request("POST", f"/v2/{repository}/blobs/uploads/", scope=scope)
        if started.status_code in (401, 403):
            return False
        raise_for(self.registry, started, f"starting an upload to {repository}")
        location = started.headers.get("Location", "")
        if location:
            # Cancelling is a DELETE, which distribution grants only with the `delete` action
            # (a Harbor robot with push has none): where it is refused, the empty upload stays
            # until the registry's upload purging removes it (distribution: after 7 days).
            self.request(
                "DELETE",
                urljoin(f"{self.base_url}/", location),
                scope=f"repository:{repository}:delete",
            )
        return True

    def manifest_digest(self, repository: str, tag: str) -> str | None:
        """The digest of the tag's manifest, or None if the repository has no such tag."""
        response = self.request(
            "HEAD",
            f"/v2/{repository}/manifests/{tag}",
            scope=f"repository:{repository}:pull",
            headers={"Accept": MANIFEST_TYPES},
        )
        if response.status_code == 404:
            return None
        raise_for(self.registry, response, f"reading the manifest of {repository}:{tag}")
        return response.headers.get("Docker-Content-Digest")

    def tag_manifest(self, repository: str, digest: str, tag: str) -> str:
        """Give the manifest ``digest`` one more tag: its bytes read back and put under
        ``tag`` unchanged (no layer is looked at: the registry holds them all already).
        Returns the digest the registry stored, which must be ``digest``."""
        scope = f"repository:{repository}:pull,push"
        doing = f"tagging {repository}@{digest} as {tag}"
        manifest = self.request(
            "GET",
            f"/v2/{repository}/manifests/{digest}",
            scope=scope,
            headers={"Accept": MANIFEST_TYPES},
        )
        raise_for(self.registry, manifest, doing)
        media_type = manifest.headers.get("Content-Type", "")
        stored = self.request(
            "PUT",
            f"/v2/{repository}/manifests/{tag}",
            scope=scope,
            headers={"Content-Type": media_type},
            data=manifest.content,
        )
        raise_for(self.registry, stored, doing)
        answered = stored.headers.get("Docker-Content-Digest", digest)
        if answered != digest:
            raise RegistryError(
                f"registry {self.registry.host} stored {repository}:{tag} as {answered}, "
                f"not {digest}",
                hint="The registry changed the manifest; push the tag again.",
            )
        return answered

    def request(
        self,
        method: str,
        path: str,
        *,
        scope: str = "",
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
        with_auth: bool = True,
    ) -> requests.Response:
        """One request to ``path`` (``/v2/...``, or a whole URL), answering a 401 challenge
        (Basic or Bearer) with the credentials."""
        import requests

        registry = self.registry
        # A path on the registry's URL, or a whole URL it gave (an upload's Location).
        url = path if path.startswith(("https://", "http://")) else f"{self.base_url}{path}"
        auth = (registry.username, registry.password)
        login = with_auth and bool(registry.username)
        try:
            if login and self._basic:
                return self._http.request(method, url, headers=headers, data=data, auth=auth)
            if login and scope in self._tokens:
                bearer = {**(headers or {}), "Authorization": f"Bearer {self._tokens[scope]}"}
                response = self._http.request(method, url, headers=bearer, data=data)
            else:
                response = self._http.request(method, url, headers=headers, data=data)
            if response.status_code != 401 or not login:
                return response
            challenge = response.headers.get("WWW-Authenticate", "")
            if not challenge.lower().startswith("bearer"):
                self._basic = True
                return self._http.request(method, url, headers=headers, data=data, auth=auth)
            params = dict(_CHALLENGE_PARAM.findall(challenge))
            query = {"service": params.get("service", "")}
            if scope or params.get("scope"):
                query["scope"] = scope or params["scope"]
            token_response = self._http.get(params.get("realm", ""), params=query, auth=auth)
            if token_response.status_code != 200:
                return token_response
            body = token_response.json()
            token = body.get("token") or body.get("access_token") or ""
            self._tokens[scope] = token
            return self._http.request(
                method,
                url,
                headers={**(headers or {}), "Authorization": f"Bearer {token}"},
                data=data,
            )
        except requests.RequestException as exc:
            raise RegistryError(f"registry {registry.host}: {_reason(exc)}") from exc


class _Http:
    """A requests Session that trusts the registry's CA and always has a timeout."""

    def __init__(self, registry: Registry) -> None:
        import requests

        self.session = requests.Session()
        # Passed with every request: requests lets REQUESTS_CA_BUNDLE override a Session's
        # own `verify`, which would drop the registry's CA.
        self.verify: str | bool = str(registry.ca_file) if registry.ca_file else True
        self.timeout = registry.timeout

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        return self.session.request(method, url, verify=self.verify, timeout=self.timeout, **kwargs)

    def get(self, url: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", url, **kwargs)


def _base_url(registry: Registry, session: _Http) -> tuple[str, requests.Response]:
    """The URL the registry answers on (https first, plain http only for localhost), and
    its unauthenticated answer to ``GET /v2/`` there."""
    import requests

    https = f"https://{registry.host}"
    try:
        return https, session.get(f"{https}/v2/")
    except requests.exceptions.SSLError as exc:
        tls_error: requests.RequestException = exc
    except requests.RequestException as exc:
        tls_error = exc
    if registry.is_local:
        http = f"http://{registry.host}"
        try:
            answer = session.get(f"{http}/v2/")
            if "Docker-Distribution-Api-Version" in answer.headers:
                return http, answer
        except requests.RequestException:
            pass
    if isinstance(tls_error, requests.exceptions.SSLError) and "not speak TLS" in _reason(
        tls_error
    ):
        raise RegistryError(
            f"registry {registry.host} does not speak TLS, and over http it did not answer "
            "as a Docker registry",
            hint=f"Check that {registry.host} is the registry's address "
            "(setting registry / MANIFEST_REGISTRY).",
        ) from tls_error
    if isinstance(tls_error, requests.exceptions.SSLError):
        raise RegistryError(
            f"registry {registry.host}: TLS verification failed ({_reason(tls_error)})",
            hint="Set MANIFEST_REGISTRY_CA_FILE to the registry's CA certificate.",
        ) from tls_error
    raise RegistryError(
        f"registry {registry.host} is unreachable ({_reason(tls_error)})",
        hint=f"Check that the registry runs and that {registry.host} is the right address "
        "(setting registry / MANIFEST_REGISTRY).",
    ) from tls_error


def raise_for(registry: Registry, response: requests.Response, doing: str) -> None:
    """RegistryError for an answer that refused or failed ``doing``."""
    if response.status_code in (401, 403):
        raise RegistryError(
            f"registry {registry.host} refused {doing} (HTTP {response.status_code})"
        )
    if response.status_code >= 400:
        raise RegistryError(
            f"registry {registry.host}: HTTP {response.status_code} while {doing}",
            hint="The registry's log may say more.",
        )


def _reason(exc: Exception) -> str:
    """A short reason from a requests/urllib3 exception (their messages run to paragraphs)."""
    text = str(exc)
    for pattern, short in (
        (r"Connection refused", "connection refused"),
        (r"Name or service not known|nodename nor servname|getaddrinfo failed", "unknown host"),
        (r"timed out", "timed out"),
        (r"certificate verify failed: [^(']*", None),
        (r"WRONG_VERSION_NUMBER", "the server does not speak TLS"),
    ):
        found = re.search(pattern, text)
        if found:
            return short or found.group(0).strip()
    return " ".join(text.split())[:160]
