"""The reliability suite's fixtures and the one check every scenario ends with: no request was lost.

- ``rstack(...)``: a :class:`LocalStack` on the test Redis (or a Redis the test started) against the
  session sandbox; stopped after the test, its logs kept for the secrets scan and attached to a
  failure report.
- ``collected``: session-wide record of every log file the stacks wrote and every access token the
  sandbox issued, scanned by ``test_secrets.py`` (which runs last).
- :func:`assert_none_lost`: every published request id ends delivered or dead-lettered (per request,
  through :func:`worker.pipeline.status.read`), each dead letter exists with the reason its status
  names, and every delivered address is in the sandbox's own record of unsubscribes.
"""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.support.sandbox_fixtures import SandboxClient
from tests.support.stacks import PROVIDER_OF, STACKS, StackFactory, attach_logs
from tests.support.waiting import wait_for
from unsub_dev.localstack.redis_server import free_port, redis_answers, server_binary
from unsub_dev.localstack.stack import LocalStack
from worker import keys
from worker.pipeline import deadletters, status
from worker.pipeline.status import DeliveryState

#: Settings every reliability stack uses unless a scenario overrides them.
RELIABILITY_SETTINGS: dict[str, Any] = {
    "visibility_timeout_s": 12,
    "unacked_restore_interval_s": 1,
    "shutdown_timeout_s": 10,
}


@dataclass
class Collected:
    """What the whole session's stacks left behind, for the secrets scan."""

    log_dirs: list[Path] = field(default_factory=list)
    issued_tokens: set[str] = field(default_factory=set)

    def log_files(self) -> list[Path]:
        return sorted(p for d in self.log_dirs for p in d.glob("*.log"))


@pytest.fixture(scope="session")
def collected() -> Collected:
    return Collected()


def sandbox_tokens(client: SandboxClient) -> set[str]:
    """Every access and refresh token the in-process sandbox knows right now (issued or seeded)."""
    app = client.server.sandbox
    found: set[str] = set()
    for provider in (app.cc_partner, app.cc_contacts):
        store = getattr(provider, "tokens", None)
        if store is not None:
            found |= set(store.expiry)
        for name in ("refresh_tokens", "refresh"):
            value = getattr(provider, name, None)
            if isinstance(value, dict | set | list):
                found |= {str(v) for v in value}
    return found


@pytest.fixture
def rstack(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    redis_client: redis.Redis,
    redis_url: str,
    sandbox: SandboxClient,
    collected: Collected,
) -> Iterator[StackFactory]:
    """Make stacks (``rstack(settings_overrides=..., config_hook=..., redis_url=...)``)."""
    factory = StackFactory(
        tmp_path,
        redis_url,
        sandbox.url,
        defaults=RELIABILITY_SETTINGS,
        on_make=lambda stack: collected.log_dirs.append(stack.workdir),
    )
    request.node.stash[STACKS] = factory.stacks
    yield factory
    factory.stop_all()
    collected.issued_tokens |= sandbox_tokens(sandbox)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """On failure, attach the processes' log tails to the report."""
    outcome: Any = yield
    attach_logs(item, outcome.get_result())


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The secrets scan reads what every other scenario logged, so it runs after them."""
    last = [i for i in items if i.nodeid.startswith("tests/reliability/test_secrets.py")]
    if last:
        items[:] = [i for i in items if i not in last] + last


def wait_finished(stack: LocalStack, request_ids: Iterable[str], *, timeout_s: float) -> None:
    """Wait until intake took in every request id (its status exists) and the stack is settled
    (``LocalStack.wait_settled`` also waits for messages a worker took but has not acknowledged).
    """
    waiting = list(request_ids)
    deadline = time.monotonic() + timeout_s

    def taken_in() -> bool:
        nonlocal waiting
        pipe = stack.redis.pipeline(transaction=False)
        for rid in waiting:
            pipe.hexists(keys.request_status(rid), status.META_FIELD)
        waiting = [rid for rid, seen in zip(waiting, pipe.execute(), strict=True) if not seen]
        return not waiting

    wait_for(
        taken_in,
        timeout_s=timeout_s,
        interval_s=0.5,
        message=lambda: f"intake of {len(waiting)} requests (first {waiting[:3]})",
    )
    stack.wait_settled(timeout_s=max(deadline - time.monotonic(), 10))


@dataclass
class Outcomes:
    """What became of each published request."""

    states: Counter[str]
    dead: dict[str, list[tuple[str, str]]]  # request id -> [(connection, reason)]


def assert_none_lost(
    stack: LocalStack,
    sandbox: SandboxClient,
    emails: dict[str, str],
    connections: Iterable[str],
    *,
    allow_dead: bool = False,
) -> Outcomes:
    """Every request id in ``emails`` (id -> address) reached an outcome on each of ``connections``.

    Delivered deliveries must show up in the sandbox's unsubscribe events of that provider; dead
    ones must have a dead letter carrying the status's reason. With ``allow_dead=False`` any dead
    letter fails the check.
    """
    client = stack.redis
    wanted = sorted(connections)
    states: Counter[str] = Counter()
    dead: dict[str, list[tuple[str, str]]] = {}
    problems: list[str] = []
    delivered_to: dict[str, set[str]] = {c: set() for c in wanted}
    for request_id, email in emails.items():
        found = status.read(client, request_id)
        if found is None or found.meta is None:
            problems.append(f"{request_id}: no status at all (lost before intake)")
            continue
        by_conn = {d.connection: d for d in found.deliveries}
        if sorted(by_conn) != wanted:
            problems.append(f"{request_id}: deliveries for {sorted(by_conn)}, expected {wanted}")
        for delivery in found.deliveries:
            states[delivery.state.value] += 1
            if delivery.state is DeliveryState.DELIVERED:
                delivered_to.setdefault(delivery.connection, set()).add(email)
            elif delivery.state is DeliveryState.DEAD_LETTERED:
                dead.setdefault(request_id, []).append((delivery.connection, delivery.reason or ""))
                letter_id = deadletters.delivery_letter_id(
                    f"{request_id}|{delivery.connection}|{delivery.target}"
                )
                letter = deadletters.get(client, letter_id)
                if letter is None or letter.reason != delivery.reason or not delivery.reason:
                    problems.append(
                        f"{request_id}: dead-lettered ({delivery.reason}) without a matching letter"
                    )
            else:
                problems.append(f"{request_id}/{delivery.connection}: still {delivery.state.value}")
    for conn, addresses in delivered_to.items():
        if not addresses:
            continue
        seen = {e.get("email") for e in sandbox.unsubscribes(PROVIDER_OF[conn])}
        missing = addresses - seen
        if missing:
            problems.append(f"{conn}: {len(missing)} delivered addresses unknown to the sandbox")
    assert not problems, f"{len(problems)} requests lost or unfinished:\n" + "\n".join(problems[:20])
    if not allow_dead:
        assert not dead, f"unexpected dead letters: {list(dead.items())[:10]}"
    return Outcomes(states=states, dead=dead)


@dataclass
class PersistentRedis:
    """A Redis server of the test's own, every write fsynced to its append-only file before the
    reply, so a restart on the same port and directory brings back everything it acknowledged."""

    workdir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PersistentRedis:
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [
            str(server_binary()),
            *("--bind", "127.0.0.1", "--port", str(self.port), "--save", ""),
            *("--appendonly", "yes", "--appendfsync", "always"),
            *("--dir", str(self.workdir), "--logfile", str(self.workdir / f"redis-{self.starts}.out")),
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.starts += 1
        deadline = time.monotonic() + 30
        while not redis_answers(self.url):
            assert self.proc.poll() is None, f"redis-server exited; see {self.workdir}"
            assert time.monotonic() < deadline, f"redis-server did not answer; see {self.workdir}"
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        """SIGTERM: Redis finishes the append-only file and exits (as a restart in production)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        self.proc = None


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[PersistentRedis]:
    server = PersistentRedis(tmp_path / "redis-data").start()
    yield server
    server.stop()
