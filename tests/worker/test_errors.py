"""The exception tree: every class is documented in it and raised somewhere (no dead classes)."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from worker import errors

ROOT = Path(__file__).parents[2]


def _classes() -> list[type[BaseException]]:
    return [c for _, c in inspect.getmembers(errors, inspect.isclass) if c.__module__ == errors.__name__]


def _raised_names() -> set[str]:
    found: set[str] = set()
    for path in [*(ROOT / "worker").rglob("*.py"), *(ROOT / "producer").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Raise) and node.exc is not None:
                target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
                if isinstance(target, ast.Name):
                    found.add(target.id)
                elif isinstance(target, ast.Attribute):
                    found.add(target.attr)
    return found


def test_every_error_class_is_in_the_documented_tree() -> None:
    tree = errors.__doc__ or ""

    assert [c.__name__ for c in _classes() if c.__name__ not in tree] == []


def test_every_error_class_but_the_branches_is_raised_somewhere() -> None:
    raised = _raised_names()
    classes = _classes()
    branches = {c.__name__ for c in classes if any(o is not c and issubclass(o, c) for o in classes)}

    assert [c.__name__ for c in classes if c.__name__ not in raised | branches] == []
