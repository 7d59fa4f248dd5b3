"""CRUD on students under ``/api/student``.

Routes are ``async def`` and await ``crud`` on the runtime's pool: the statement and the
serialisation of the response both run on the event loop, no thread hop.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Response, status

from student_api import crud
from student_api.api.deps import DatabaseDep
from student_api.models import STUDENT_LIST, StudentCreate, StudentPublic, StudentUpdate

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000

router = APIRouter(prefix="/api/student", tags=["students"])

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No student with this id"}}


def _not_found(student_id: int) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"student {student_id} not found")


@router.get("", summary="List students by id", response_model=list[StudentPublic])
async def list_students(
    db: DatabaseDep,
    offset: Annotated[int, Query(ge=0, description="rows to skip")] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="rows to return")] = DEFAULT_LIMIT,
) -> Response:
    # Returned as a Response, which FastAPI sends as it is: the rows are serialised once,
    # straight from dicts, instead of validated into models and then serialised
    # (response_model still documents the schema).
    rows = await crud.list_students(db, offset=offset, limit=limit)
    return Response(STUDENT_LIST.dump_json(rows), media_type="application/json")


@router.post("", status_code=status.HTTP_201_CREATED, summary="Add a student")
async def create_student(body: StudentCreate, db: DatabaseDep, response: Response) -> StudentPublic:
    created = await crud.create_student(db, body)
    response.headers["Location"] = f"{router.prefix}/{created.id}"
    return created


@router.get("/{student_id}", responses=NOT_FOUND, summary="One student")
async def get_student(student_id: int, db: DatabaseDep) -> StudentPublic:
    found = await crud.get_student(db, student_id)
    if found is None:
        raise _not_found(student_id)
    return found


@router.put("/{student_id}", responses=NOT_FOUND, summary="Replace a student's name and age")
async def update_student(student_id: int, body: StudentUpdate, db: DatabaseDep) -> StudentPublic:
    updated = await crud.update_student(db, student_id, body)
    if updated is None:
        raise _not_found(student_id)
    return updated


@router.delete(
    "/{student_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=NOT_FOUND,
    summary="Remove a student",
)
async def delete_student(student_id: int, db: DatabaseDep) -> Response:
    if not await crud.delete_student(db, student_id):
        raise _not_found(student_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
