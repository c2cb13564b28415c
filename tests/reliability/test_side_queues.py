"""Messages Celery cannot run, on the queues Celery itself consumes, are kept, never dropped.

A real `unsub worker` (and the scheduler) on the test Redis. Envelopes built by hand (no producer
library) are LPUSHed onto a delivery queue and the control queue, as a publisher that got its queue
or its task wrong would: an intake message with a valid request (it must be handed to the intake
door and delivered at the sandbox), an unknown task name, a body nested past the bounded decoder's
limit, a body that is not JSON, a content type that is not JSON. Each bad one must be a dead letter
with its true reason, counted as a refused message; the worker processes must be the same ones
throughout; and nothing may stay behind on a queue or unacknowledged.

Items that are no kombu envelope at all (plain text, bytes that are not UTF-8, JSON that is not an
object or has no ``properties``, nesting past Python's recursion limit) are dead-lettered raw by the
broker channel, and the worker, the same processes, goes on delivering. A worker whose consumer
fails for good ("Unrecoverable error") exits non-zero, so a supervisor restarts it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import redis

from producer import names
from tests.reliability.conftest import assert_none_lost, wait_finished
from tests.support.faulty_worker import FAULT
from tests.support.hostile import celery_envelope, nested, task_body, task_headers
from tests.support.sandbox_fixtures import SandboxClient
from tests.support.stacks import StackFactory, only_connections
from tests.support.waiting import wait_for
from unsub_dev.localstack.processes import ManagedProcess, worker_process
from unsub_dev.localstack.stack import LocalStack
from worker.pipeline import counters, deadletters, status
from worker.pipeline.trigger import DELIVER_TASK
from worker.reasons import DeadReason

pytestmark = [pytest.mark.reliability, pytest.mark.integration, pytest.mark.timeout(300)]

DELIVERY_QUEUE = names.delivery_queue("insider")
#: Items that are no kombu envelope, and the problem each one's dead letter names.
NOT_ENVELOPES: dict[bytes, str] = {
    b"this is not json": "not JSON: JSONDecodeError",
    b"\xff\xfe not utf-8 \xc3": "not UTF-8",
    b"[1,2]": "JSON list, not an object",
    b"{}": "no 'properties' object",
    json.dumps({"body": "e30=", "content-type": "application/json", "headers": {}}).encode(): (
        "no 'properties' object"
    ),
    nested(100_000, "").encode(): "JSON nested too deep to parse",
}
#: Seconds a worker gets to stop after its consumer failed for good.
EXIT_TIMEOUT_S = 60.0
#: kombu's hash of the messages a consumer took and has not acknowledged.
KOMBU_UNACKED = "unacked"


@dataclass(frozen=True)
class Bad:
    """One hand-built message that must end as a dead letter."""

    task_id: str
    reason: str
    problem: str


def pool_pids(proc: ManagedProcess) -> set[int]:
    assert proc.pid is not None
    main = psutil.Process(proc.pid)
    return {main.pid, *(c.pid for c in main.children(recursive=True))}


def push(
    client: redis.Redis, queue: str, body: bytes, *, task: str, content_type: str = "application/json"
) -> str:
    task_id = str(uuid.uuid4())
    envelope = celery_envelope(
        body, headers=task_headers(task_id, task=task), content_type=content_type, routing_key=queue
    )
    client.lpush(queue, envelope)
    return task_id


def letter_for(client: redis.Redis, task_id: str) -> deadletters.DeadLetter | None:
    return next((x for x in deadletters.scan(client, deadletters.Filter()) if task_id in (x.raw or "")), None)


def insider_stack(rstack: StackFactory) -> tuple[LocalStack, ManagedProcess, set[int]]:
    """One worker (2 processes) and the scheduler for insider; the worker's pids to compare later."""
    stack = rstack(config_hook=only_connections("insider"))
    worker = stack.start_worker("w1", concurrency=2)
    stack.start_scheduler()
    return stack, worker, pool_pids(worker)


def all_or_none(letters: list[deadletters.DeadLetter | None]) -> list[deadletters.DeadLetter] | None:
    found = [x for x in letters if x is not None]
    return found if len(found) == len(letters) else None


def test_messages_celery_cannot_run_on_its_own_queues_are_handed_to_intake_or_dead_lettered(
    rstack: StackFactory, sandbox: SandboxClient
) -> None:
    stack, worker, pids_before = insider_stack(rstack)
    client = stack.redis
    good = {
        "request_id": f"side-{uuid.uuid4()}",
        "email": "side.door@example.com",
        "connections": ["insider"],
    }
    never = {
        "request_id": f"never-{uuid.uuid4()}",
        "email": "never.taken@example.com",
        "connections": ["insider"],
    }

    push(client, DELIVERY_QUEUE, task_body([good]), task=names.INTAKE_TASK)
    bad = [
        Bad(
            push(client, names.CONTROL_QUEUE, task_body([never]), task="unsub.Intake"),
            DeadReason.UNKNOWN_TASK,
            "task 'unsub.Intake' is not one this worker runs",
        ),
        Bad(
            push(client, DELIVERY_QUEUE, task_body([]), task="unsub.nothing"),
            DeadReason.UNKNOWN_TASK,
            "task 'unsub.nothing' is not one this worker runs",
        ),
        Bad(
            push(client, DELIVERY_QUEUE, nested(200).encode(), task=DELIVER_TASK),
            DeadReason.INVALID_MESSAGE,
            "body could not be decoded (JSON nested deeper than 64 levels)",
        ),
        Bad(
            push(client, names.CONTROL_QUEUE, b"{not json", task="unsub.ping"),
            DeadReason.INVALID_MESSAGE,
            "body could not be decoded",
        ),
        Bad(
            push(client, names.CONTROL_QUEUE, b"a: 1", task="unsub.ping", content_type="application/x-yaml"),
            DeadReason.INVALID_MESSAGE,
            "content type 'application/x-yaml' is not accepted",
        ),
    ]
    wait_finished(stack, [good["request_id"]], timeout_s=120)
    letters = wait_for(
        lambda: all_or_none([letter_for(client, b.task_id) for b in bad]),
        timeout_s=60,
        message="a dead letter for every bad message",
    )
    wait_for(lambda: client.hlen(KOMBU_UNACKED) == 0, timeout_s=60, message="every message acknowledged")

    assert_none_lost(stack, sandbox, {good["request_id"]: good["email"]}, ["insider"])
    for expected, letter in zip(bad, letters, strict=True):
        assert letter.reason == expected.reason, letter.message
        assert expected.problem in letter.message
    assert status.read(client, never["request_id"]) is None, "a request in an unknown task is not taken in"
    assert counters.read_intake(client)["refused_messages"] == len(bad)
    assert [client.llen(q) for q in (names.CONTROL_QUEUE, DELIVERY_QUEUE, names.INTAKE_QUEUE)] == [0, 0, 0]
    assert pool_pids(worker) == pids_before, "no worker process died or was replaced"


def raw_letters(client: redis.Redis, count: int) -> list[deadletters.DeadLetter] | None:
    """The dead letters of items that are no kombu envelope, once there are ``count`` of them."""
    letters = deadletters.scan(client, deadletters.Filter())
    found = [x for x in letters if "not a kombu message envelope" in x.message]
    return found if len(found) == count else None


def test_items_that_are_no_kombu_envelope_are_dead_lettered_and_the_worker_goes_on_delivering(
    rstack: StackFactory, sandbox: SandboxClient
) -> None:
    stack, worker, pids_before = insider_stack(rstack)
    client = stack.redis
    queues = (names.CONTROL_QUEUE, DELIVERY_QUEUE)
    expected = sorted((queue, problem) for queue in queues for problem in NOT_ENVELOPES.values())

    for queue in queues:
        for item in NOT_ENVELOPES:
            client.lpush(queue, item)
    letters = wait_for(
        lambda: raw_letters(client, len(expected)),
        timeout_s=60,
        message="a dead letter for every item that is no kombu envelope",
    )
    delivered_after = publish_one_after(stack, "after.junk@example.com")

    assert_none_lost(stack, sandbox, delivered_after, ["insider"])
    assert {x.reason for x in letters} == {DeadReason.INVALID_MESSAGE}
    found = sorted(
        (queue, problem)
        for x in letters
        for queue in queues
        for problem in set(NOT_ENVELOPES.values())
        if f"(queue {queue!r})" in x.message and f"({problem}" in x.message
    )
    assert found == expected
    assert counters.read_intake(client)["refused_messages"] == len(expected)
    assert [client.llen(q) for q in queues] == [0, 0]
    assert pool_pids(worker) == pids_before, "no worker process died or was replaced"


@dataclass(frozen=True)
class HandBuilt:
    """One hand-built envelope and the list it goes on."""

    queue: str
    task_id: str
    item: bytes


#: Stands in a hand-built envelope's JSON for a value spliced in as raw JSON text (any depth).
SPLICE = "@@splice@@"


def spliced(
    queue: str,
    body: bytes,
    *,
    task: str = DELIVER_TASK,
    headers: dict[str, str] | None = None,
    properties: dict[str, str] | None = None,
) -> HandBuilt:
    """An envelope for ``queue``, with header and property values given as JSON text
    (``json.dumps`` could not write them: thousands of levels deep, tens of megabytes)."""
    task_id = str(uuid.uuid4())
    envelope = json.loads(celery_envelope(body, headers=task_headers(task_id, task=task), routing_key=queue))
    marks: dict[str, str] = {}
    for part, values in (("headers", headers or {}), ("properties", properties or {})):
        for name, text in values.items():
            mark = f"{SPLICE}{len(marks)}"
            envelope[part][name] = mark
            marks[json.dumps(mark)] = text
    item = json.dumps(envelope)
    for mark, text in marks.items():
        item = item.replace(mark, text)
    return HandBuilt(queue, task_id, item.encode())


def test_envelopes_celery_would_choke_on_are_dead_lettered_and_the_same_worker_goes_on_delivering(
    rstack: StackFactory, sandbox: SandboxClient
) -> None:
    stack, worker, pids_before = insider_stack(rstack)
    client = stack.redis
    control, deliver = names.CONTROL_QUEUE, DELIVERY_QUEUE
    fine, deep_header = task_body(["insider"]), "'headers' nested deeper than 64 levels"
    bad_task = "message: not a valid task message ("
    cases = [
        (spliced(deliver, fine, headers={"x-custom": nested(100)}), DeadReason.INVALID_MESSAGE, deep_header),
        (spliced(deliver, fine, headers={"x-custom": nested(600)}), DeadReason.INVALID_MESSAGE, deep_header),
        (spliced(deliver, fine, headers={"x-custom": nested(900)}), DeadReason.INVALID_MESSAGE, deep_header),
        (
            spliced(control, fine, headers={"x-custom": nested(5000)}),
            DeadReason.INVALID_MESSAGE,
            "too deep to parse",
        ),
        (
            spliced(control, task_body([]), task="unsub.ping", headers={"argsrepr": nested(900)}),
            DeadReason.INVALID_MESSAGE,
            deep_header,
        ),
        (
            spliced(control, task_body([]), task="unsub.ping", headers={"stamps": f'{{"s": {nested(900)}}}'}),
            DeadReason.INVALID_MESSAGE,
            deep_header,
        ),
        (
            spliced(control, task_body([]), task="unsub.ping", properties={"x-prop": nested(900)}),
            DeadReason.INVALID_MESSAGE,
            "'properties' nested deeper than 64 levels",
        ),
        (
            spliced(deliver, f"[{nested(600)}, {{}}, {{}}]".encode()),
            DeadReason.INVALID_MESSAGE,
            "body could not be decoded (JSON nested deeper than 64 levels)",
        ),
        (
            spliced(deliver, task_body(["insider", 2, 3])),
            DeadReason.INVALID_MESSAGE,
            f"{bad_task}arguments do not fit the task",
        ),
        (
            spliced(control, b'{"a": 1}', task="unsub.ping"),
            DeadReason.INVALID_MESSAGE,
            f"{bad_task}body is not [args, kwargs, embed])",
        ),
        (
            spliced(control, task_body([]), task="unsub.ping", headers={"timelimit": "[1, 2, 3]"}),
            DeadReason.INVALID_MESSAGE,
            f"{bad_task}'timelimit' is not two numbers of seconds)",
        ),
        (
            spliced(control, task_body([]), headers={"task": '["unsub.ping"]'}),
            DeadReason.INVALID_MESSAGE,
            f"{bad_task}header 'task' is not a string)",
        ),
        (
            spliced(deliver, fine, headers={"x-big": json.dumps("x" * 50_000_000)}),
            DeadReason.MESSAGE_TOO_LARGE,
            "message: too large (",
        ),
    ]

    for message, _, _ in cases:
        client.lpush(message.queue, message.item)
    letters = wait_for(
        lambda: all_or_none([letter_for(client, message.task_id) for message, _, _ in cases]),
        timeout_s=120,
        message="a dead letter for every envelope Celery would choke on",
    )
    delivered_after = publish_one_after(stack, "after.deep@example.com")

    assert_none_lost(stack, sandbox, delivered_after, ["insider"])
    for (_, reason, problem), letter in zip(cases, letters, strict=True):
        assert (letter.reason, problem in letter.message) == (reason, True), letter.message
    assert counters.read_intake(client)["refused_messages"] == len(cases)
    assert [client.llen(q) for q in (control, deliver)] == [0, 0]
    assert client.hlen(KOMBU_UNACKED) == 0
    assert pool_pids(worker) == pids_before, "no worker process died or was replaced"


def test_a_worker_whose_consumer_fails_for_good_exits_non_zero_with_one_line_saying_so(
    rstack: StackFactory, tmp_path: Path
) -> None:
    stack = rstack()
    proc = worker_process(stack.config_path, tmp_path, name="faulty", concurrency=1)
    with proc.log_path.open("ab") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "tests.support.faulty_worker", *proc.args],
            env={**os.environ, **proc.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(lambda: proc.ready is not None and proc.ready(), timeout_s=60, message="the worker ready")
        stack.redis.lpush(names.CONTROL_QUEUE, b"anything")
        code = child.wait(timeout=EXIT_TIMEOUT_S)
    finally:
        with contextlib.suppress(ProcessLookupError):  # the pool processes, or all of it if it hung
            os.killpg(child.pid, signal.SIGKILL)
    log_text = proc.log_path.read_text(errors="replace")

    assert code == 1, log_text[-3000:]
    assert f"Unrecoverable error: RuntimeError('{FAULT}')" in log_text
    assert log_text.count("Celery's worker stopped on a failure; exiting non-zero") == 1


def publish_one_after(stack: LocalStack, email: str) -> dict[str, str]:
    """A valid request published after the bad ones, waited for: request id -> address."""
    good = {"request_id": f"after-{uuid.uuid4()}", "email": email}
    with stack.producer() as producer:
        producer.publish_many([good])
    wait_finished(stack, [good["request_id"]], timeout_s=120)
    return {good["request_id"]: good["email"]}
