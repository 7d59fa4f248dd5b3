"""Swagger UI is served by the app itself: the page names only the app's own URLs, and
those answer with the assets (so ``/swagger`` works on a network without internet)."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient

pytestmark = pytest.mark.integration


class _Links(HTMLParser):
    """Every URL an HTML page makes the browser load: src= and href= attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


def page_urls(html: str) -> list[str]:
    parser = _Links()
    parser.feed(html)
    # SwaggerUIBundle({url: '...'}): the OpenAPI document the page fetches.
    return parser.urls + re.findall(r"""\burl:\s*['"]([^'"]+)['"]""", html)


EXPECTED_TYPES = {
    ".js": ("text/javascript", "application/javascript"),
    ".css": ("text/css",),
    ".png": ("image/png",),
    ".json": ("application/json",),
}


def test_swagger_page_loads_only_the_apps_own_urls(client: TestClient) -> None:
    page = client.get("/swagger")

    assert page.status_code == 200
    urls = page_urls(page.text)
    assert "://" not in page.text, "the page names another host"
    assert sorted(urls) == [
        "/swagger/static/favicon.png",
        "/swagger/static/swagger-ui-bundle.js",
        "/swagger/static/swagger-ui.css",
        "/swagger/v1/swagger.json",
    ]
    for url in urls:
        assert url.startswith("/swagger/") and not url.startswith("//"), url


@pytest.mark.parametrize(
    "url",
    [
        "/swagger/static/swagger-ui-bundle.js",
        "/swagger/static/swagger-ui.css",
        "/swagger/static/favicon.png",
        "/swagger/v1/swagger.json",
    ],
)
def test_swagger_assets_are_served(client: TestClient, url: str) -> None:
    response = client.get(url)

    assert response.status_code == 200
    media_type = response.headers["content-type"].split(";")[0]
    assert media_type in EXPECTED_TYPES[url[url.rindex(".") :]]
    if url.endswith("swagger-ui-bundle.js"):
        # Swagger UI 5 (the major FastAPI's CDN URL names): reads OpenAPI 3.1 documents.
        assert b"SwaggerUIBundle" in response.content
        assert re.search(rb'"5\.\d+\.\d+"', response.content)
        assert len(response.content) > 500_000
    if url.endswith(".css"):
        assert b".swagger-ui" in response.content
