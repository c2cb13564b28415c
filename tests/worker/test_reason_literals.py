"""Reason and cause codes are spelled once, in ``worker/reasons.py``: nowhere else in ``worker/`` does
a string literal equal one of them (a copy drifts when the code is renamed; operators filter by it)."""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

from worker.reasons import DeadReason, RetryCause

ROOT = Path(__file__).parents[2]
CODES = {c.value for c in DeadReason} | {c.value for c in RetryCause}

#: Literals that equal a code by coincidence and are not reasons, with how often each file has them.
NOT_REASONS: dict[tuple[str, str], int] = {
    # The tally field and per-connection counter of records put back to wait for a turn.
    ("worker/pipeline/counters.py", "rate_limited"): 1,
    ("worker/pipeline/outcomes.py", "rate_limited"): 2,
    ("worker/pipeline/task_counts.py", "rate_limited"): 2,
    # redis-py's retry policy option of the result backend.
    ("worker/app.py", "timeout"): 1,
}


def codes_in(source: str) -> list[str]:
    """Every string constant of ``source`` that equals a reason or cause code."""
    tree = ast.parse(source)
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and n.value in CODES]


def reason_literals() -> Counter[tuple[str, str]]:
    """(file, code) of every string constant in ``worker/`` (but reasons.py) that equals a code."""
    found: Counter[tuple[str, str]] = Counter()
    for path in sorted((ROOT / "worker").rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        if relative != "worker/reasons.py":
            found.update((relative, code) for code in codes_in(path.read_text(encoding="utf-8")))
    return found


def test_no_reason_code_is_written_as_a_literal_outside_the_reasons_module() -> None:
    found = reason_literals()

    assert dict(found) == NOT_REASONS


def test_the_scan_finds_a_reason_literal_where_one_is_written() -> None:
    source = 'HOLD = "auth_failed"\nOTHER = "fine"\n'

    hits = codes_in(source)

    assert hits == ["auth_failed"]
