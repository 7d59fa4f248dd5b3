"""Probes: startup (migrations done), live (process answers, no DB), ready (DB answers)."""

from __future__ import annotations

import anyio
from fastapi import APIRouter, status
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

from student_api.api.deps import RuntimeDep
from student_api.core.db import ping
from student_api.core.runtime import describe_db_error

router = APIRouter(prefix="/health", tags=["health"])


def _answer(code: int, **body: str | None) -> JSONResponse:
    return JSONResponse(body, status_code=code)


@router.get("/live", summary="Liveness: the process answers (no database call)")
async def live() -> JSONResponse:
    return _answer(status.HTTP_200_OK, status="ok")


@router.get("/startup", summary="Startup: migrations are applied")
async def startup(runtime: RuntimeDep) -> JSONResponse:
    if not runtime.migrated.is_set():
        return _answer(status.HTTP_503_SERVICE_UNAVAILABLE, status="starting")
    return _answer(status.HTTP_200_OK, status="started", revision=runtime.revision)


@router.get("/ready", summary="Readiness: the database answers within a short timeout")
async def ready(runtime: RuntimeDep) -> JSONResponse:
    unavailable = status.HTTP_503_SERVICE_UNAVAILABLE
    if runtime.draining:
        return _answer(unavailable, status="draining")
    engine = runtime.probe_engine
    if engine is None or not runtime.migrated.is_set():
        return _answer(unavailable, status="starting")
    timeout = runtime.settings.ready_timeout
    with anyio.move_on_after(timeout):
        try:
            # Abandoned on timeout: a hung connection must not hold the probe.
            await anyio.to_thread.run_sync(
                ping, engine, abandon_on_cancel=True, limiter=runtime.probe_limiter
            )
        except SQLAlchemyError as exc:
            return _answer(unavailable, status="unavailable", detail=describe_db_error(exc))
        return _answer(status.HTTP_200_OK, status="ready")
    return _answer(
        unavailable, status="unavailable", detail=f"database did not answer within {timeout:g}s"
    )
