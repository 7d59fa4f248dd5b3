"""Shared pytest fixtures for the suite's tests and the app's tests."""

pytest_plugins = ["tests.support.postgres"]
