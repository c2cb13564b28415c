"""Scenario: SIGKILLs exactly inside the fetch windows lose no accepted request (issue 16).

A watcher process reads Redis's MONITOR stream line by line and SIGKILLs a worker's whole process
group right after the command that opens a fetch window (:mod:`tests.support.fetch_windows`): the
pump's EVALSHA that moved a message, an XREADGROUP or XCLAIM of the intake stream, an XREADGROUP of
a buffer stream, kombu's ``SET unacked_mutex ... NX``, and a BRPOP of an intake list (kombu's fetch:
nothing does it since the intake loop, but a regression that brings it back gets killed there).

Two workers (2 processes each) and the scheduler run while three producers publish the whole time
(two through the Celery door, one plain XADD of JSON to the intake stream); each killed worker is
started again under its name at once. Then every accepted request (every publish that returned)
must end delivered, request by request, with its address in the sandbox's record. The kills must
have been real: every window of the current design is hit at least twice, and the intake and buffer
windows at least once with entries in the victim's hands at the moment it died.

``reclaim_idle_s`` is the production default (120 s): nothing recovers through the last-resort
reclaim. On the design before the intake loop (commit 6c20c51) this scenario loses messages and
the test fails naming requests that are nowhere in Redis.
"""

from __future__ import annotations

import base64
import json
import re
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.reliability.conftest import assert_none_lost
from tests.support.fetch_windows import Hunter, Kill, Plan, Window, WindowKiller, parse
from tests.support.publishers import Publisher, Publishers
from tests.support.sandbox_fixtures import SandboxClient
from tests.support.stacks import StackFactory, only_connections
from tests.support.waiting import wait_for
from unsub_dev.localstack.processes import ManagedProcess
from unsub_dev.localstack.stack import LocalStack
from worker import keys
from worker.pipeline import status

pytestmark = [pytest.mark.reliability, pytest.mark.integration, pytest.mark.timeout(480)]

CONNECTIONS = ("cc-partner", "insider")
WORKERS = ("w1", "w2")
#: Windows of the current design; ``list_pop`` only fires if something BRPOPs an intake list again.
CURRENT_WINDOWS = (
    Window.PUMP,
    Window.INTAKE_READ,
    Window.INTAKE_CLAIM,
    Window.BUFFER_READ,
    Window.RESTORE_LOCK,
)
PLAN = Plan(
    quotas={
        Window.PUMP: 6,
        Window.INTAKE_READ: 6,
        Window.INTAKE_CLAIM: 6,
        Window.BUFFER_READ: 6,
        Window.RESTORE_LOCK: 6,
        Window.LIST_POP: 14,
    },
    min_gap_s=2.0,
)
KILL_PHASE_S = 180.0
SETTLE_S = 120.0
PUBLISHERS = [
    Publisher("fw-big", door="celery", per_message=500, pause_s=5.0),
    Publisher("fw-small", door="celery", per_message=40, pause_s=1.0),
    Publisher("fw-json", door="stream", per_message=20, pause_s=1.0),
]
INTAKE_LISTS = ("unsub.intake", *(f"unsub.intake\x06\x16{step}" for step in (3, 6, 9)))
INTAKE_STREAM = "unsub:intake:json"


@dataclass(frozen=True)
class Evidence:
    """What the victim held at the moment it died."""

    kill: Kill
    intake_held: int
    buffer_held: int
    lock_ms: int


def test_sigkills_inside_every_fetch_window_lose_no_accepted_request(
    rstack: StackFactory, sandbox: SandboxClient, tmp_path: Path
) -> None:
    stack = rstack(config_hook=only_connections(*CONNECTIONS), settings_overrides={"reclaim_idle_s": 120})
    workers = {name: stack.start_worker(name, concurrency=2) for name in WORKERS}
    stack.start_scheduler()
    killer = WindowKiller(stack.redis_url, PLAN).start()
    publishers = Publishers(stack.redis_url, PUBLISHERS, tmp_path).start()

    try:
        evidence = _kill_phase(stack, killer, workers)
    finally:
        accepted = publishers.stop()
        late = killer.stop()
        killer.close()
    for kill in late:
        evidence.append(_evidence(stack.redis, kill))
    _running_again(workers)
    missing = _wait_taken_in(stack, list(accepted), timeout_s=SETTLE_S)

    print(_summary(evidence, killer, len(accepted)))
    assert not missing, _lost_report(stack.redis, missing)
    snap = stack.wait_settled(expected_requests=len(accepted), timeout_s=SETTLE_S)
    outcomes = assert_none_lost(stack, sandbox, accepted, CONNECTIONS)
    assert outcomes.states == {"delivered": len(accepted) * len(CONNECTIONS)}
    delivered = {c.name: c.counters.get("delivered", 0) for c in snap.connections}
    assert delivered == dict.fromkeys(CONNECTIONS, len(accepted)), "each record is counted delivered once"
    _assert_kills_were_real(evidence)


#: MONITOR lines as Redis 7 writes them (a script's commands follow its EVALSHA, marked ``lua``).
SAMPLE_LINES = [
    b'+1.00 [15 127.0.0.1:4001] "EVALSHA" "9f2c" "5" "unsub.intake" "unsub:intake:json" "500"',
    b'+1.01 [15 lua] "RPOP" "unsub.intake"',
    b'+1.02 [15 lua] "XADD" "unsub:intake:json" "*" "celery" "{\\"body\\": \\"e30=\\"}"',
    b'+1.10 [15 127.0.0.1:4002] "XREADGROUP" "GROUP" "intake" "w2@h:intake" "COUNT" "200" "BLOCK" '
    b'"100" "STREAMS" "unsub:intake:json" ">"',
    b'+1.15 [15 127.0.0.1:4009] "XADD" "unsub:intake:json" "*" "message" "[]"',
    b'+1.20 [15 127.0.0.1:4003] "XREADGROUP" "GROUP" "deliver" "w1@h#1" "COUNT" "200" "STREAMS" '
    b'"unsub:buf:insider" ">"',
    b'+1.30 [15 127.0.0.1:4001] "XCLAIM" "unsub:intake:json" "intake" "w1@h:intake" "0" "1-0"',
    b'+1.40 [15 127.0.0.1:4004] "SET" "unacked_mutex" "f00d" "PX" "10000" "NX"',
    b'+1.50 [15 127.0.0.1:4005] "BRPOP" "unsub.intake" "unsub.intake\\x06\\x163" "unsub.control" "1"',
    b'+1.60 [15 127.0.0.1:4009] "LPUSH" "unsub.intake" "{}"',
    b'+1.70 [15 127.0.0.1:4001] "XACK" "unsub:intake:json" "intake" "1-0"',
    b'+1.75 [15 127.0.0.1:4007] "EVALSHA" "77aa" "1" "unsub:intake:json" "intake" "w2@h:intake" "200"',
    b'+1.76 [15 lua] "XPENDING" "unsub:intake:json" "intake" "-" "+" "200" "w2@h:intake"',
    b'+1.77 [15 lua] "XCLAIM" "unsub:intake:json" "intake" "w2@h:intake" "0" "1-0"',
    b'+1.80 [14 127.0.0.1:4006] "XCLAIM" "unsub:intake:json" "intake" "c" "0" "1-0"',
    b'+1.82 [15 127.0.0.1:4009] "XADD" "unsub:intake:json" "*" "message" "[]"',
    b'+1.85 [15 127.0.0.1:4008] "EVALSHA" "5b6e" "1" "unsub:intake:json" "intake" "w1@h:intake" "200"',
    b'+1.86 [15 lua] "XREADGROUP" "GROUP" "intake" "w1@h:intake" "COUNT" "200" "STREAMS" '
    b'"unsub:intake:json" ">"',
    # the same read again: nothing was added since, so it hands nothing out (no window)
    b'+1.95 [15 127.0.0.1:4008] "EVALSHA" "5b6e" "1" "unsub:intake:json" "intake" "w1@h:intake" "200"',
    b'+1.96 [15 lua] "XREADGROUP" "GROUP" "intake" "w1@h:intake" "COUNT" "200" "STREAMS" '
    b'"unsub:intake:json" ">"',
]


def test_the_watcher_tells_every_fetch_window_from_monitor_lines() -> None:
    hunter = Hunter(db=15)

    found = [s for raw in SAMPLE_LINES if (line := parse(raw)) for s in hunter.feed(line)]

    assert [(s.window, s.port) for s in found] == [
        (Window.PUMP, 4001),
        (Window.INTAKE_READ, 4002),
        (Window.BUFFER_READ, 4003),
        (Window.INTAKE_CLAIM, 4001),
        (Window.RESTORE_LOCK, 4004),
        (Window.LIST_POP, 4005),
        (None, 4001),
        (Window.INTAKE_CLAIM, 4007),
        (Window.INTAKE_READ, 4008),
    ]


def _kill_phase(
    stack: LocalStack, killer: WindowKiller, workers: dict[str, ManagedProcess]
) -> list[Evidence]:
    for name, proc in workers.items():
        killer.arm(name, _pid(proc))
    evidence: list[Evidence] = []
    restarts: list[threading.Thread] = []
    deadline = time.monotonic() + KILL_PHASE_S
    while not _quotas_met(evidence) and time.monotonic() < deadline:
        kill = killer.next_kill(timeout_s=1.0)
        if kill is not None:
            evidence.append(_evidence(stack.redis, kill))
            restarts.append(_restart(workers[kill.worker], lambda pid, n=kill.worker: killer.arm(n, pid)))
    for thread in restarts:
        thread.join(timeout=120)
    return evidence


def _quotas_met(evidence: list[Evidence]) -> bool:
    """Every window of the current design was killed in as often as the plan says."""
    kills = Counter(e.kill.window for e in evidence)
    return all(kills[w] >= PLAN.quotas[w] for w in CURRENT_WINDOWS)


def _evidence(client: redis.Redis, kill: Kill) -> Evidence:
    """Read at once: the dead worker's claims stay where they are until its restart or the liveness
    window (seconds) moves them."""
    intake = _held(client, INTAKE_STREAM, keys.NATIVE_INTAKE_GROUP, kill.worker)
    buffers = sum(_held(client, keys.buffer_stream(c), keys.BUFFER_GROUP, kill.worker) for c in CONNECTIONS)
    return Evidence(kill, intake, buffers, int(client.pttl("unacked_mutex")))


def _held(client: redis.Redis, stream: str, group: str, worker: str) -> int:
    try:
        summary = client.xpending(stream, group)
    except redis.ResponseError:
        return 0
    consumers = summary.get("consumers") or []
    return sum(int(c["pending"]) for c in consumers if str(c["name"]).startswith(f"{worker}@"))


def _pid(proc: ManagedProcess) -> int:
    assert proc.pid is not None
    return proc.pid


def _restart(proc: ManagedProcess, arm: Any) -> threading.Thread:
    """Reap the killed worker, start it again under its name and arm it as soon as it exists."""
    old = _pid(proc)
    assert proc.proc is not None
    proc.proc.wait(timeout=30)
    thread = threading.Thread(target=proc.start, name=f"restart {proc.name}", daemon=True)
    thread.start()
    wait_for(lambda: proc.running and proc.pid != old, timeout_s=30, message=f"{proc.name} restarted")
    arm(_pid(proc))
    return thread


def _running_again(workers: dict[str, ManagedProcess]) -> None:
    for proc in workers.values():
        if not proc.running:
            assert proc.proc is not None
            proc.proc.wait(timeout=30)
            proc.start()


def _wait_taken_in(stack: LocalStack, request_ids: list[str], *, timeout_s: float) -> list[str]:
    """Wait until intake recorded every id; returns those still missing when the time ran out."""
    waiting = request_ids
    deadline = time.monotonic() + timeout_s
    while waiting and time.monotonic() < deadline:
        pipe = stack.redis.pipeline(transaction=False)
        for rid in waiting:
            pipe.hexists(keys.request_status(rid), status.META_FIELD)
        waiting = [rid for rid, seen in zip(waiting, pipe.execute(), strict=True) if not seen]
        time.sleep(0.5)
    return waiting


def _lost_report(client: redis.Redis, missing: list[str]) -> str:
    """Where the missing requests are: still queued somewhere (late), or nowhere (lost for good)."""
    where = _whereabouts(client)
    found = Counter(where.get(rid, "nowhere in Redis: lost") for rid in missing)
    queues = {
        "intake lists": sum(int(client.llen(k)) for k in INTAKE_LISTS),
        "intake stream": int(client.xlen(INTAKE_STREAM)),
        "unacked": int(client.hlen("unacked")),
        "unacked_mutex pttl ms": int(client.pttl("unacked_mutex")),
    }
    return (
        f"{len(missing)} accepted requests never taken in after {SETTLE_S:.0f}s "
        f"(first {missing[:3]}): {dict(found)}; queues {queues}"
    )


def _whereabouts(client: redis.Redis) -> dict[str, str]:
    """Request id -> where its message waits: the intake lists, kombu's unacked hash, the stream."""
    where: dict[str, str] = {}
    for key in INTAKE_LISTS:
        for raw in client.lrange(key, 0, -1):
            where.update(dict.fromkeys(_ids_in_envelope(raw), "intake lists"))
    for raw in client.hvals("unacked"):
        where.update(dict.fromkeys(_ids_in_envelope(raw, unacked=True), "unacked"))
    entries: list[tuple[str, dict[str, str]]] = client.xrange(INTAKE_STREAM)  # type: ignore[assignment]
    for _, fields in entries:
        body = fields.get("celery") or fields.get("message") or ""
        ids = _ids_in_envelope(body) if "celery" in fields else _ids_in_requests(body)
        where.update(dict.fromkeys(ids, "intake stream"))
    for raw in client.hvals(keys.DLQ_ITEMS):
        letter = json.loads(raw)
        if letter.get("raw"):
            ids = _ids_in_letter(letter["raw"])
            where.update(dict.fromkeys(ids, f"dead letter {letter['reason']}: {letter['message'][:80]}"))
    return where


def _ids_in_letter(raw: str) -> set[str]:
    """Request ids in a message letter's raw text (the entry's fields, cut): the JSON door's plain
    requests, or the base64 body of a Celery envelope, decoded as far as the cut allows."""
    text = raw
    body = re.search(r'"body":\s*"([A-Za-z0-9+/=]+)', raw)
    if body is not None:
        b64 = body.group(1)
        text += base64.b64decode(b64[: len(b64) // 4 * 4]).decode("utf-8", "replace")
    return set(re.findall(r'"request_id":\s*"([^"]+)"', text))


def _ids_in_envelope(raw: Any, *, unacked: bool = False) -> set[str]:
    try:
        envelope = json.loads(raw)
        envelope = envelope[0] if unacked else envelope
        args = json.loads(base64.b64decode(envelope["body"]))[0]
    except (ValueError, KeyError, IndexError, TypeError):
        return set()
    return _ids_in_requests(json.dumps(args[0] if args else []))


def _ids_in_requests(body: str) -> set[str]:
    try:
        payload = json.loads(body)
    except ValueError:
        return set()
    items = payload if isinstance(payload, list) else [payload]
    return {str(i["request_id"]) for i in items if isinstance(i, dict) and "request_id" in i}


def _summary(evidence: list[Evidence], killer: WindowKiller, accepted: int) -> str:
    lags = sorted(e.kill.lag_ms for e in evidence)
    rows = [
        f"  {w.value:13} kills={sum(e.kill.window is w for e in evidence):2} "
        f"intake_held={sum(e.intake_held > 0 for e in evidence if e.kill.window is w)} "
        f"buffer_held={sum(e.buffer_held > 0 for e in evidence if e.kill.window is w)} "
        f"lock_alive={sum(e.lock_ms > 0 for e in evidence if e.kill.window is w)}"
        for w in Window
    ]
    lag = f"median {statistics.median(lags):.2f} ms, max {lags[-1]:.2f} ms" if lags else "no kills"
    stats = killer.stats
    seen = stats.seen if stats else {}
    skipped = stats.skipped if stats else {}
    head = f"fetch-window kills: {len(evidence)} ({accepted} requests accepted); kill lag {lag}"
    return "\n".join([head, *rows, f"  windows sighted {seen}", f"  sightings not killed {skipped}"])


def _assert_kills_were_real(evidence: list[Evidence]) -> None:
    by_window = Counter(e.kill.window for e in evidence)
    assert all(by_window[w] >= 2 for w in CURRENT_WINDOWS), f"each window killed twice: {by_window}"
    assert any(e.intake_held for e in evidence if e.kill.window is Window.INTAKE_READ)
    assert any(e.intake_held for e in evidence if e.kill.window is Window.INTAKE_CLAIM)
    assert any(e.buffer_held for e in evidence if e.kill.window is Window.BUFFER_READ)
    assert any(e.lock_ms > 0 for e in evidence if e.kill.window is Window.RESTORE_LOCK)
