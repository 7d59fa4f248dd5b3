"""Student models in families: what clients send, what is stored, what clients get back."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter
from sqlalchemy import Identity, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from typing_extensions import TypedDict

NAME_MAX = 100
AGE_MIN = 1
AGE_MAX = 150

Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=NAME_MAX),
    Field(description=f"1 to {NAME_MAX} characters, surrounding blanks removed", examples=["Max"]),
]
Age = Annotated[
    int,
    Field(strict=True, ge=AGE_MIN, le=AGE_MAX, description="whole years", examples=[25]),
]


class StudentBase(BaseModel):
    name: Name
    age: Age


class StudentCreate(StudentBase):
    """Body of ``POST /api/student``; an ``id`` sent by the client is ignored."""


class StudentUpdate(StudentBase):
    """Body of ``PUT /api/student/{id}``: replaces name and age (an ``id`` in it is ignored)."""


class StudentPublic(BaseModel):
    """What the API returns, in the seed's shape: ``{"id": 1, "name": "Max", "age": 25}``."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    age: int


class StudentRecord(TypedDict):
    """A stored student as a plain dict with ``StudentPublic``'s fields, in its order.

    Lists are serialised from these (``STUDENT_LIST.dump_json``) instead of one validated
    ``StudentPublic`` per row: the database's column types already guarantee the shape,
    and building 100 models was the listing's largest cost. The JSON is byte for byte the
    one FastAPI writes for ``list[StudentPublic]`` (``app/tests/test_app_contract.py``).
    """

    id: int
    name: str
    age: int


STUDENT_LIST: TypeAdapter[list[StudentRecord]] = TypeAdapter(list[StudentRecord])


class Base(DeclarativeBase):
    pass


class Student(Base):
    """The stored student (table ``student``; its schema lives in the Alembic migrations)."""

    __tablename__ = "student"

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_MAX), nullable=False)
    age: Mapped[int] = mapped_column(Integer, nullable=False)
