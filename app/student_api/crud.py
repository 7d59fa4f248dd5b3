"""Database work for the student routes: one statement each, on the runtime's async pool.

The statements are SQLAlchemy Core, built and compiled once (for psycopg) when this module is
imported; a request only binds its values and runs the compiled text on a pooled psycopg
``AsyncConnection`` on the event loop (no thread hop, no per-request compilation, rows as
psycopg's tuples: measured by bench/app_bench.py, see app/README.md).

Every operation is a single SQL statement (``INSERT/UPDATE/DELETE ... RETURNING``), so the
pool's connections run in autocommit: no BEGIN/ROLLBACK round trips around it, and it is
atomic on its own. Each returns plain values (``StudentPublic``; the list: ``StudentRecord``
dicts, cheaper for 100 rows), so the pooled connection is back in the pool before the
response is serialised.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.sql.elements import ClauseElement

from student_api.core.db import Pool, connection
from student_api.models import Student, StudentBase, StudentPublic, StudentRecord

# SQLAlchemy's psycopg dialect: the SQL text and bind casts its engine would send.
_DIALECT = PGDialect_psycopg()  # type: ignore[no-untyped-call]


@dataclass(frozen=True)
class Compiled:
    """A Core statement as psycopg runs it: its SQL text and the values it carries itself
    (the literals), to which a call adds the named ``bindparam`` values."""

    sql: str
    fixed: Mapping[str, Any]

    @classmethod
    def of(cls, statement: ClauseElement, *names: str) -> Compiled:
        compiled = statement.compile(dialect=_DIALECT)
        fixed = {key: value for key, value in compiled.params.items() if key not in names}
        return cls(sql=str(compiled), fixed=fixed)

    def params(self, **values: object) -> dict[str, Any]:
        return {**self.fixed, **values}


_COLUMNS = (Student.id, Student.name, Student.age)
LIST = Compiled.of(
    select(*_COLUMNS).order_by(Student.id).offset(bindparam("offset")).limit(bindparam("limit")),
    "offset",
    "limit",
)
_BY_ID = Student.id == bindparam("student_id")
GET = Compiled.of(select(*_COLUMNS).where(_BY_ID), "student_id")
CREATE = Compiled.of(
    insert(Student)
    .values(name=bindparam("new_name"), age=bindparam("new_age"))
    .returning(*_COLUMNS),
    "new_name",
    "new_age",
)
UPDATE = Compiled.of(
    update(Student)
    .where(_BY_ID)
    .values(name=bindparam("new_name"), age=bindparam("new_age"))
    .returning(*_COLUMNS),
    "student_id",
    "new_name",
    "new_age",
)
DELETE = Compiled.of(delete(Student).where(_BY_ID).returning(Student.id), "student_id")


async def _one(pool: Pool, statement: Compiled, **values: object) -> Any:
    """The first row ``statement`` returns for ``values`` (None without one)."""
    async with connection(pool) as conn:
        cursor = await conn.execute(statement.sql, statement.params(**values))
        return await cursor.fetchone()


def _public(row: Any) -> StudentPublic | None:
    return StudentPublic(id=row[0], name=row[1], age=row[2]) if row is not None else None


async def list_students(pool: Pool, *, offset: int, limit: int) -> list[StudentRecord]:
    """A page of students by id, as plain records (see ``StudentRecord``)."""
    async with connection(pool) as conn:
        cursor = await conn.execute(LIST.sql, LIST.params(offset=offset, limit=limit))
        rows = await cursor.fetchall()
    return [{"id": id_, "name": name, "age": age} for id_, name, age in rows]


async def get_student(pool: Pool, student_id: int) -> StudentPublic | None:
    return _public(await _one(pool, GET, student_id=student_id))


async def create_student(pool: Pool, data: StudentBase) -> StudentPublic:
    created = _public(await _one(pool, CREATE, new_name=data.name, new_age=data.age))
    assert created is not None  # INSERT ... RETURNING returns its row
    return created


async def update_student(pool: Pool, student_id: int, data: StudentBase) -> StudentPublic | None:
    return _public(
        await _one(pool, UPDATE, student_id=student_id, new_name=data.name, new_age=data.age)
    )


async def delete_student(pool: Pool, student_id: int) -> bool:
    return await _one(pool, DELETE, student_id=student_id) is not None
