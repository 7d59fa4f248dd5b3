"""The manifest student API: CRUD on PostgreSQL, Swagger, health probes, Prometheus metrics."""
