"""The wire contract, byte for byte: ``GET /api/student`` and the OpenAPI document.

The expected files in ``data/`` were produced by the app as it was before the listing was
made faster (commit 970ffc5, rows from ``ROWS`` below): any change to how the list is read
or serialised must leave these bytes alike. Change the files only with a deliberate change
of the API, and say so in the commit.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, insert, text

from student_api.models import Student

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parent / "data"

# Stored rows as they may be in the table (written by SQL, not only through the API): the
# characters JSON must escape, non-ASCII in and beyond the BMP, and the edges of the ages.
ROWS: list[dict[str, object]] = [
    {"id": 1, "name": "Max", "age": 25},
    {"id": 2, "name": 'Zoë "Zo" O\'Brien', "age": 1},
    {"id": 3, "name": "back\\slash / slash", "age": 150},
    {"id": 4, "name": "日本語の名前", "age": 33},
    {"id": 5, "name": "emoji 😀 and 𝄞", "age": 40},
    {"id": 6, "name": "tab\tnew\nline\rcr", "age": 0},
    {"id": 7, "name": "ctl \x01\x1f\x7f end", "age": -5},
    {"id": 8, "name": "sep \u2028\u2029 <script>&amp;", "age": 2147483647},
    {"id": 9, "name": " spaces kept as stored ", "age": 18},
    {"id": 10, "name": "x" * 100, "age": 99},
    *({"id": 10 + i, "name": f"Student {i}", "age": 18 + i % 50} for i in range(1, 121)),
]

# (query, file): the default page, a page in the middle, a page past the end.
PAGES = [
    ("", "students-default.json"),
    ("?offset=5&limit=7", "students-offset5-limit7.json"),
    ("?limit=1000", "students-limit1000.json"),
    ("?offset=500", "students-offset500.json"),
]


def seed(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(insert(Student).values(ROWS).execution_options(render_nulls=True))
        # Keep the identity ahead of the explicit ids (as a restore would).
        conn.execute(text("SELECT setval(pg_get_serial_sequence('student', 'id'), 1000)"))


@pytest.fixture
def seeded(client: TestClient) -> TestClient:
    seed(client.app.state.runtime.engine)  # type: ignore[attr-defined]
    return client


@pytest.mark.parametrize(("query", "name"), PAGES, ids=[name for _, name in PAGES])
def test_list_bytes_are_those_of_the_app_before(seeded: TestClient, query: str, name: str) -> None:
    response = seeded.get("/api/student" + query)

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.content == (DATA / name).read_bytes()


def test_openapi_document_is_the_one_before(client: TestClient) -> None:
    document = client.get("/swagger/v1/swagger.json")

    assert document.status_code == 200
    expected = json.loads((DATA / "openapi.json").read_text())
    assert document.json() == expected
