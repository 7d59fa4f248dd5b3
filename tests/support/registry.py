"""Registry reads only the tests need: the tags of a repository, a login that must work.

Built on ``ops.registry``'s own request (same URL choice, TLS and auth handling), so the
tests look at the registry the way the tasks reach it.
"""

from __future__ import annotations

from ops.errors import RegistryError
from ops.registry import Registry, RegistryCheck, api_request, check, raise_for


def list_tags(registry: Registry, repository: str) -> list[str]:
    """The repository's tags (empty if the repository does not exist)."""
    response = api_request(
        registry, "GET", f"/v2/{repository}/tags/list", scope=f"repository:{repository}:pull"
    )
    if response.status_code == 404:
        return []
    raise_for(registry, response, f"listing the tags of {repository}")
    return sorted(response.json().get("tags") or [])


def require_login(registry: Registry) -> RegistryCheck:
    """Like ``check``, but a refused or missing login is an error too."""
    result = check(registry)
    if result.login == "refused":
        raise RegistryError(f"registry {registry.host} refused the login of {registry.username!r}")
    if result.login == "no credentials":
        raise RegistryError(f"registry {registry.host} needs a login and no credentials are set")
    return result
