"""Fixtures for tests of the worker package."""

from tests.support.pipeline_harness import harness, make_harness

__all__ = ["harness", "make_harness"]
