"""CRUD on students under ``/api/student``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Response, status
from sqlalchemy import select

from student_api.api.deps import SessionDep
from student_api.models import Student, StudentCreate, StudentPublic, StudentUpdate

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000

router = APIRouter(prefix="/api/student", tags=["students"])

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No student with this id"}}


def _get_or_404(session: SessionDep, student_id: int) -> Student:
    student = session.get(Student, student_id)
    if student is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"student {student_id} not found")
    return student


@router.get("", response_model=list[StudentPublic], summary="List students by id")
def list_students(
    session: SessionDep,
    offset: Annotated[int, Query(ge=0, description="rows to skip")] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="rows to return")] = DEFAULT_LIMIT,
) -> list[Student]:
    query = select(Student).order_by(Student.id).offset(offset).limit(limit)
    return list(session.scalars(query))


@router.post(
    "",
    response_model=StudentPublic,
    status_code=status.HTTP_201_CREATED,
    summary="Add a student",
)
def create_student(body: StudentCreate, session: SessionDep, response: Response) -> Student:
    student = Student(name=body.name, age=body.age)
    session.add(student)
    session.commit()
    response.headers["Location"] = f"{router.prefix}/{student.id}"
    return student


@router.get(
    "/{student_id}", response_model=StudentPublic, responses=NOT_FOUND, summary="One student"
)
def get_student(student_id: int, session: SessionDep) -> Student:
    return _get_or_404(session, student_id)


@router.put(
    "/{student_id}",
    response_model=StudentPublic,
    responses=NOT_FOUND,
    summary="Replace a student's name and age",
)
def update_student(student_id: int, body: StudentUpdate, session: SessionDep) -> Student:
    student = _get_or_404(session, student_id)
    student.name = body.name
    student.age = body.age
    session.commit()
    return student


@router.delete(
    "/{student_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=NOT_FOUND,
    summary="Remove a student",
)
def delete_student(student_id: int, session: SessionDep) -> Response:
    session.delete(_get_or_404(session, student_id))
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
