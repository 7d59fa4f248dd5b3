"""Database work for the student routes: plain, blocking functions, one short session each.

Each returns validated ``StudentPublic`` values, so the pooled connection is back in the pool
before the response is serialised. The routes run these in the thread pool.
"""

from __future__ import annotations

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from student_api.models import Student, StudentBase, StudentPublic


def list_students(engine: Engine, *, offset: int, limit: int) -> list[StudentPublic]:
    query = (
        select(Student.id, Student.name, Student.age)
        .order_by(Student.id)
        .offset(offset)
        .limit(limit)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return [StudentPublic(id=row.id, name=row.name, age=row.age) for row in rows]


def get_student(engine: Engine, student_id: int) -> StudentPublic | None:
    with Session(engine) as session:
        student = session.get(Student, student_id)
        return StudentPublic.model_validate(student) if student is not None else None


def create_student(engine: Engine, data: StudentBase) -> StudentPublic:
    with Session(engine) as session:
        student = Student(name=data.name, age=data.age)
        session.add(student)
        session.commit()
        return StudentPublic.model_validate(student)


def update_student(engine: Engine, student_id: int, data: StudentBase) -> StudentPublic | None:
    with Session(engine) as session:
        student = session.get(Student, student_id, with_for_update=True)
        if student is None:
            return None
        student.name = data.name
        student.age = data.age
        session.commit()
        return StudentPublic.model_validate(student)


def delete_student(engine: Engine, student_id: int) -> bool:
    with Session(engine) as session, session.begin():
        student = session.get(Student, student_id, with_for_update=True)
        if student is None:
            return False
        session.delete(student)
    return True
