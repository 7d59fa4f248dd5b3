"""Dependencies shared by the routes: the runtime and its engine (never a connection).

They are ``async def`` on purpose: a plain ``def`` dependency costs a worker-thread hop per
request. The routes run ``crud`` on the runtime's database threads (``Runtime.run_db``),
which hold a pooled connection only for its one statement, so none is held while FastAPI
serialises the response (with bounded threads, holding it there can deadlock requests
waiting for a connection against those that hold one).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, status

from student_api.core.runtime import Runtime


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_database(runtime: RuntimeDep) -> Runtime:
    """The runtime, once its engine is up and the schema is at head (else 503)."""
    if runtime.engine is None or not runtime.migrated.is_set():
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "starting: database schema not ready yet"
        )
    return runtime


DatabaseDep = Annotated[Runtime, Depends(get_database)]
