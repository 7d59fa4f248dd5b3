"""Database work for the student routes: plain, blocking functions, one statement each.

Every operation is a single SQL statement (``INSERT/UPDATE/DELETE ... RETURNING``), so it runs
in autocommit: no BEGIN/ROLLBACK round trips around it, and it is atomic on its own. Each
returns plain values (``StudentPublic``; the list: ``StudentRecord`` dicts, cheaper for 100
rows), so the pooled connection is back in the pool before the response is serialised. The
routes run these in the thread pool.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, Row, bindparam, delete, insert, select, update

from student_api.models import Student, StudentBase, StudentPublic, StudentRecord

_COLUMNS = (Student.id, Student.name, Student.age)
# Built once: a statement made per call costs more Python than the query's round trip.
_LIST_QUERY = (
    select(*_COLUMNS).order_by(Student.id).offset(bindparam("offset")).limit(bindparam("limit"))
)


@contextmanager
def _autocommit(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as conn:
        yield conn.execution_options(isolation_level="AUTOCOMMIT")


def _public(row: Row[int, str, int]) -> StudentPublic:
    return StudentPublic(id=row.id, name=row.name, age=row.age)


def list_students(engine: Engine, *, offset: int, limit: int) -> list[StudentRecord]:
    """A page of students by id, as plain records (see ``StudentRecord``)."""
    with _autocommit(engine) as conn:
        rows = conn.execute(_LIST_QUERY, {"offset": offset, "limit": limit}).all()
    return [{"id": id_, "name": name, "age": age} for id_, name, age in rows]


def get_student(engine: Engine, student_id: int) -> StudentPublic | None:
    with _autocommit(engine) as conn:
        row = conn.execute(select(*_COLUMNS).where(Student.id == student_id)).first()
    return _public(row) if row is not None else None


def create_student(engine: Engine, data: StudentBase) -> StudentPublic:
    statement = insert(Student).values(name=data.name, age=data.age).returning(*_COLUMNS)
    with _autocommit(engine) as conn:
        row = conn.execute(statement).one()
    return _public(row)


def update_student(engine: Engine, student_id: int, data: StudentBase) -> StudentPublic | None:
    statement = (
        update(Student)
        .where(Student.id == student_id)
        .values(name=data.name, age=data.age)
        .returning(*_COLUMNS)
    )
    with _autocommit(engine) as conn:
        row = conn.execute(statement).first()
    return _public(row) if row is not None else None


def delete_student(engine: Engine, student_id: int) -> bool:
    statement = delete(Student).where(Student.id == student_id).returning(Student.id)
    with _autocommit(engine) as conn:
        return conn.execute(statement).first() is not None
