"""Swagger UI at ``/swagger``, served entirely by the app: no CDN, so it works offline.

FastAPI's default page loads Swagger UI's JavaScript and CSS from a CDN, which leaves it
blank on a network without internet. Following FastAPI's "self-hosting" recipe, the page
points at copies served under ``/swagger/static/`` (inside the Ingress's ``/swagger``
prefix); the files are Swagger UI's dist files as shipped by the ``fastapi-offline`` package
(a PyPI package kept in step with the swagger-ui-dist@5 that FastAPI's CDN URLs name).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_URL = "/swagger"
OPENAPI_URL = "/swagger/v1/swagger.json"
STATIC_URL = "/swagger/static"


def assets_dir() -> Path:
    """Swagger UI's files (swagger-ui-bundle.js, swagger-ui.css, favicon.png)."""
    return Path(str(files("fastapi_offline") / "static"))


def install_docs(app: FastAPI) -> None:
    """Serve the UI and its assets; the app must be built with ``docs_url=None``."""
    app.mount(STATIC_URL, StaticFiles(directory=assets_dir()), name="swagger-static")

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        # As FastAPI's own docs route: honour a proxy's root_path.
        root = str(request.scope.get("root_path", "")).rstrip("/")
        return get_swagger_ui_html(
            openapi_url=root + OPENAPI_URL,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{STATIC_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{STATIC_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{STATIC_URL}/favicon.png",
            swagger_ui_parameters=app.swagger_ui_parameters,
        )
