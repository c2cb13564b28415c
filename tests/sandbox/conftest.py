"""Sandbox tests use the shared sandbox fixtures (tests/support/sandbox_fixtures.py)."""

from tests.support.sandbox_fixtures import sandbox, sandbox_factory, sandbox_server  # noqa: F401
