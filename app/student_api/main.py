"""Builds the FastAPI app; nothing happens at import time."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from psycopg import Error as DatabaseError

from student_api.api.docs import OPENAPI_URL, install_docs
from student_api.api.routes import health, students
from student_api.core.config import Settings, get_settings
from student_api.core.metrics import Metrics, MetricsMiddleware
from student_api.core.runtime import Runtime, describe_db_error

log = logging.getLogger("student_api")


def _location(loc: tuple[int | str, ...]) -> str:
    # ("body", "age") -> "age"; ("query", "limit") -> "limit"; ("body", 15) -> "body"
    # (a JSON syntax error at character 15).
    names = [str(part) for part in loc[1:] if isinstance(part, str)]
    return ".".join(names) or (str(loc[0]) if loc else "request")


async def validation_failed(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    summary = "; ".join(f"{_location(tuple(e['loc']))}: {e['msg']}" for e in errors)
    return JSONResponse(
        {"detail": f"invalid request: {summary}", "errors": errors},
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
    )


async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.warning(
        "%s %s: database unavailable: %s", request.method, request.url.path, describe_db_error(exc)
    )
    return JSONResponse(
        {"detail": "database unavailable, try again shortly"},
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API for ``settings`` (default: :func:`get_settings`); the engine opens on startup."""
    runtime = Runtime(settings=settings or get_settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Requests use the runtime's async pool on the event loop; the readiness probe
        # anyio's threads, at most two at a time.
        runtime.probe_limiter = anyio.CapacityLimiter(2)
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = FastAPI(
        title="Student API",
        version="1.0.0",
        description="Students of the manifest project: CRUD on PostgreSQL.",
        docs_url=None,  # served by install_docs, with its assets, instead of a CDN's
        openapi_url=OPENAPI_URL,
        redoc_url=None,
        lifespan=lifespan,
        # FastAPI's native OpenTelemetry: this app exports Prometheus metrics (below) and
        # installs no OpenTelemetry SDK, so it would record nothing, yet its per-request
        # check for a configured provider reads os.environ several times (~5 % of the
        # listing's CPU under bench/app_bench.py).
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.runtime = runtime
    metrics = Metrics(runtime.pool_in_use)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_exception_handler(RequestValidationError, validation_failed)
    # psycopg's errors: lost connections, refused logins, and (psycopg_pool's PoolTimeout,
    # one of them) an exhausted pool.
    app.add_exception_handler(DatabaseError, database_unavailable)
    app.include_router(students.router)
    app.include_router(health.router)
    install_docs(app)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
