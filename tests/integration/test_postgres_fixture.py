"""The PostgreSQL fixture itself: a real server that answers SQL."""

from tests.support.postgres import PostgresServer


def test_server_answers_sql(postgres_server: PostgresServer, fresh_database: str) -> None:
    postgres_server.psql("CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2)", fresh_database)
    assert postgres_server.psql("SELECT sum(id) FROM t", fresh_database) == "3"
    assert postgres_server.psql("SHOW server_version_num").startswith("15")
