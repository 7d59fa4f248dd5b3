"""The HTTP contract against a real PostgreSQL: CRUD, paging, validation, docs, metrics."""

from __future__ import annotations

from typing import Any

import pytest
from app_helpers import pooled_connections, settings_for, wait_for_status
from fastapi.testclient import TestClient

from student_api.main import create_app
from tests.support.postgres import PostgresServer

pytestmark = pytest.mark.integration


def test_crud_round_trip(client: TestClient) -> None:
    assert client.get("/api/student").json() == []

    created = client.post("/api/student", json={"name": "Max", "age": 25})
    assert created.status_code == 201
    student = created.json()
    assert student == {"id": student["id"], "name": "Max", "age": 25}
    assert list(student) == ["id", "name", "age"]
    location = created.headers["location"]
    assert location == f"/api/student/{student['id']}"

    assert client.get(location).json() == student
    assert client.get("/api/student").json() == [student]

    replaced = client.put(location, json={"name": "Moritz", "age": 26})
    assert replaced.status_code == 200
    assert replaced.json() == {"id": student["id"], "name": "Moritz", "age": 26}
    assert client.get(location).json()["name"] == "Moritz"

    deleted = client.delete(location)
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert client.get(location).status_code == 404
    assert client.get("/api/student").json() == []


def test_rows_are_really_in_postgres(
    client: TestClient, postgres_server: PostgresServer, fresh_database: str
) -> None:
    client.post("/api/student", json={"name": "  Erika  ", "age": 30})

    rows = postgres_server.psql("SELECT name, age FROM student", fresh_database)

    assert rows == "Erika|30"


def test_id_in_body_is_ignored(client: TestClient) -> None:
    # Clients of the seed's ASP.NET API send the id along; it must not choose the row.
    first = client.post("/api/student", json={"id": 999, "name": "A", "age": 20}).json()
    assert first["id"] != 999
    other = client.post("/api/student", json={"name": "B", "age": 21}).json()

    client.put(f"/api/student/{first['id']}", json={"id": other["id"], "name": "A2", "age": 22})

    assert client.get(f"/api/student/{other['id']}").json()["name"] == "B"
    assert client.get(f"/api/student/{first['id']}").json()["name"] == "A2"


def test_paging_default_and_limits(
    client: TestClient, postgres_server: PostgresServer, fresh_database: str
) -> None:
    postgres_server.psql(
        "INSERT INTO student (name, age) SELECT 'S' || i, 20 FROM generate_series(1, 150) i",
        fresh_database,
    )

    default = client.get("/api/student").json()
    page = client.get("/api/student", params={"offset": 140, "limit": 50}).json()

    assert len(default) == 100
    assert [s["name"] for s in default[:2]] == ["S1", "S2"]
    assert [s["name"] for s in page] == [f"S{i}" for i in range(141, 151)]
    assert len(client.get("/api/student", params={"limit": 1000}).json()) == 150


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        pytest.param("GET", "/api/student/4242", None, id="get"),
        pytest.param("PUT", "/api/student/4242", {"name": "X", "age": 30}, id="put"),
        pytest.param("DELETE", "/api/student/4242", None, id="delete"),
    ],
)
def test_unknown_id_is_404_json(
    client: TestClient, method: str, path: str, body: dict[str, Any] | None
) -> None:
    response = client.request(method, path, json=body)

    assert response.status_code == 404
    assert response.json() == {"detail": "student 4242 not found"}


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        pytest.param({"name": "", "age": 25}, "name", "at least 1 character", id="empty-name"),
        pytest.param({"name": "   ", "age": 25}, "name", "at least 1 character", id="blank-name"),
        pytest.param({"name": "x" * 101, "age": 25}, "name", "at most 100", id="name-too-long"),
        pytest.param({"age": 25}, "name", "required", id="name-missing"),
        pytest.param({"name": "Max", "age": 0}, "age", "greater than or equal to 1", id="age-0"),
        pytest.param({"name": "Max", "age": 151}, "age", "less than or equal to 150", id="age-151"),
        pytest.param({"name": "Max", "age": "25"}, "age", "valid integer", id="age-as-string"),
        pytest.param({"name": "Max", "age": 25.5}, "age", "valid integer", id="age-fraction"),
        pytest.param({"name": "Max"}, "age", "required", id="age-missing"),
        pytest.param({"name": 7, "age": 25}, "name", "valid string", id="name-not-string"),
    ],
)
@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_invalid_body_is_422_with_clear_message(
    client: TestClient, method: str, body: dict[str, Any], field: str, words: str
) -> None:
    existing = client.post("/api/student", json={"name": "Max", "age": 25}).json()
    path = "/api/student" if method == "POST" else f"/api/student/{existing['id']}"

    response = client.request(method, path, json=body)

    assert response.status_code == 422
    payload = response.json()
    assert payload["detail"].startswith(f"invalid request: {field}: ")
    assert words in payload["detail"]
    assert payload["errors"][0]["loc"] == ["body", field]
    assert client.get("/api/student").json() == [existing]


def test_malformed_json_is_422(client: TestClient) -> None:
    response = client.post(
        "/api/student", content=b'{"name": "Max",', headers={"content-type": "application/json"}
    )

    assert response.status_code == 422
    assert response.json()["detail"] == "invalid request: body: JSON decode error"


@pytest.mark.parametrize(
    ("query", "words"),
    [
        pytest.param(
            {"limit": 1001}, "limit: Input should be less than or equal to 1000", id="max"
        ),
        pytest.param({"limit": 0}, "limit: Input should be greater than or equal to 1", id="zero"),
        pytest.param({"offset": -1}, "offset: Input should be greater than or equal", id="neg"),
    ],
)
def test_paging_out_of_range_is_422(client: TestClient, query: dict[str, int], words: str) -> None:
    response = client.get("/api/student", params=query)

    assert response.status_code == 422
    assert words in response.json()["detail"]


def test_swagger_ui_and_openapi_where_the_seed_had_them(client: TestClient) -> None:
    ui = client.get("/swagger")
    spec = client.get("/swagger/v1/swagger.json")

    assert ui.status_code == 200
    assert "swagger-ui" in ui.text
    assert "/swagger/v1/swagger.json" in ui.text
    paths = spec.json()["paths"]
    assert set(paths) >= {"/api/student", "/api/student/{student_id}"}
    assert set(paths["/api/student/{student_id}"]) == {"get", "put", "delete"}


def test_metrics_count_routes_statuses_and_pool(client: TestClient) -> None:
    client.get("/api/student")
    client.get("/api/student/4242")
    client.get("/no/such/path")

    text = client.get("/metrics").text

    assert 'http_requests_total{method="GET",route="/api/student",status="200"} 1.0' in text
    assert (
        'http_requests_total{method="GET",route="/api/student/{student_id}",status="404"} 1.0'
        in text
    )
    assert 'http_requests_total{method="GET",route="<unmatched>",status="404"} 1.0' in text
    assert 'http_request_duration_seconds_bucket{le="0.005",method="GET",route="/api/student"}' in (
        text
    )
    assert "db_pool_connections_in_use 0.0" in text
    with pooled_connections(client):
        assert "db_pool_connections_in_use 1.0" in client.get("/metrics").text


def test_works_as_a_plain_owner_with_a_password_full_of_url_characters(
    postgres_server: PostgresServer, fresh_database: str
) -> None:
    # As in production: app_user owns studentdb but is no superuser; and a password with
    # characters that would break a hand-built URL.
    password = "p@ss/w:rd%40?#&'\" x"
    quoted = password.replace("'", "''")
    postgres_server.psql(f"CREATE ROLE app_user_t LOGIN PASSWORD '{quoted}'")
    try:
        postgres_server.psql(f'ALTER DATABASE "{fresh_database}" OWNER TO app_user_t')
        settings = settings_for(
            postgres_server, fresh_database, db_user="app_user_t", db_password=password
        )
        with TestClient(create_app(settings)) as client:
            wait_for_status(client.get, "/health/ready")
            created = client.post("/api/student", json={"name": "Max", "age": 25})
            listed = client.get("/api/student")
        owner = postgres_server.psql(
            "SELECT tableowner FROM pg_tables WHERE tablename = 'student'", fresh_database
        )
    finally:
        postgres_server.drop_database(fresh_database)
        postgres_server.create_database(fresh_database)
        postgres_server.psql("DROP ROLE IF EXISTS app_user_t")

    assert created.status_code == 201
    assert listed.json() == [created.json()]
    assert owner == "app_user_t"
