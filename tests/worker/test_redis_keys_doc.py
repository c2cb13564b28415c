"""docs/redis-keys.md names every key the code builds, so the table cannot silently go stale."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from producer import names
from worker import keys
from worker.pipeline import purge, task_counts

DOC = Path(__file__).resolve().parents[2] / "docs" / "redis-keys.md"


def builders() -> list[str]:
    """The key builders of ``worker.keys``: its functions and its key constants."""
    functions = [n for n, f in inspect.getmembers(keys, inspect.isfunction) if f.__module__ == keys.__name__]
    constants = [n for n, v in vars(keys).items() if n.isupper() and isinstance(v, str) and n != "PREFIX"]
    return sorted(functions + constants)


def pattern(name: str) -> str | None:
    """What a builder makes of placeholders (``<connection>``...), if its key shows them."""
    built = getattr(keys, name)
    if not callable(built):
        return str(built)
    params = list(inspect.signature(built).parameters)
    key = str(built(*(f"<{p}>" for p in params)))
    return key if all(f"<{p}>" in key for p in params) else None


@pytest.mark.parametrize("name", builders())
def test_every_key_builder_is_in_the_keys_doc_by_name_and_pattern(name: str) -> None:
    text = DOC.read_text(encoding="utf-8")

    shown = pattern(name)

    assert f"`keys.{name}`" in text
    assert shown is None or shown in text


def test_the_keys_built_outside_the_keys_module_are_in_the_doc_too() -> None:
    text = DOC.read_text(encoding="utf-8")

    outside = [f"{task_counts.TASK_COUNTS_PREFIX}<task_id>", names.NATIVE_INTAKE_STREAM]

    assert [key for key in outside if key not in text] == []


def test_every_key_a_connection_purge_deletes_is_in_the_purge_section() -> None:
    section = DOC.read_text(encoding="utf-8").split("## Purging a removed connection")[1]

    deleted = [build("NAME") for build in (*purge.KEY_BUILDERS, *purge.PATTERNS)]

    assert [key for key in deleted if key not in section] == []
