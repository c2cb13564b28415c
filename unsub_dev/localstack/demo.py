"""`unsub demo`: the whole system on one machine, under realistic traffic and faults, checked.

It picks a Redis (a separate, marked DB of the configured server, else an embedded one), starts the
provider sandbox in-process and a :class:`~unsub_dev.localstack.stack.LocalStack` (one worker, the
scheduler), publishes a mix of requests in two waves (an Insider outage during the first, the CC
partner JWT expired between them), waits until every record reached an outcome, and compares the
system's counters with what the sandbox recorded (:mod:`unsub_dev.localstack.demo_report`).

Which Redis DB
    The demo never writes to a DB it did not create. It uses DB ``DEMO_DB`` (10) of the configured
    broker's server, or the DB an explicit ``--redis-url`` names (DB 10 when it names none). The DB
    must be empty or carry the marker key ``unsub:demo:marker``; it is flushed at start only then.
    A non-empty DB without the marker is refused (:class:`DemoDbInUseError`). When nothing answers at
    the configured URL an embedded Redis is started; an explicit ``--redis-url`` that does not answer
    is an error (:class:`RedisUnavailableError`) rather than a silent switch.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import httpx
import redis

from producer import names
from unsub_dev.errors import DemoDbInUseError, RedisUnavailableError
from unsub_dev.localstack.demo_mix import AUTO_CONTACTS, Mix, build_mix
from unsub_dev.localstack.demo_report import Report, build_report, rejected_calls
from unsub_dev.localstack.redis_server import EmbeddedRedis, redis_answers
from unsub_dev.localstack.stack import LocalStack
from unsub_dev.sandbox.config import load_config
from unsub_dev.sandbox.server import SandboxServer
from worker.pipeline.stats import Snapshot
from worker.urls import mask_url

DEMO_DB: Final = 10
MARKER_KEY: Final = "unsub:demo:marker"
DEFAULT_REQUESTS: Final = 300
DEFAULT_TIMEOUT_S: Final = 120.0
POLL_INTERVAL_S: Final = 0.25
#: The provider whose sandbox API goes down as the first wave arrives: for at least OUTAGE_S and
#: until its first calls have failed (a cold first run may reach it later than OUTAGE_S). Every call
#: is answered OUTAGE_STATUS without Retry-After, so the records wait their own backoff.
OUTAGE_PROVIDER: Final = "insider"
OUTAGE_S: Final = 3.0
OUTAGE_STATUS: Final = 503
#: The provider whose JWT the sandbox expires between the waves.
TOKEN_PROVIDER: Final = "cc_partner"
#: The contact-lookup connections make 2-3 calls per record; their default limits (4/s, 100/min)
#: would stretch the demo over minutes, so the demo raises them (in the sandbox too).
DEMO_RATE_LIMITS: Final = {"cc-contacts": "20/second", "easytools": "20/second"}
#: The sandbox's control endpoints.
FAULTS_PATH: Final = "/_sandbox/faults"
STATE_PATH: Final = "/_sandbox/state"
EXPIRE_PATH: Final = "/_sandbox/tokens/expire"
#: Keys per SCAN call when counting what a demo left behind.
LEFTOVER_SCAN_COUNT: Final = 1000


# -- Redis -------------------------------------------------------------------------------------


def demo_db_url(url: str, *, explicit: bool) -> str:
    """The demo's DB on the server of ``url``: DB 10, or the DB an explicit URL names."""
    parts = urlsplit(url)
    if parts.scheme not in {"redis", "rediss"}:
        return url  # unix sockets name their DB in the query: use the URL as given
    if explicit and parts.path.strip("/"):
        return url
    return urlunsplit(parts._replace(path=f"/{DEMO_DB}"))


def claim_demo_db(url: str) -> None:
    """Make the DB at ``url`` the demo's: refuse foreign data, else flush it and set the marker."""
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        if client.dbsize() and not client.exists(MARKER_KEY):
            raise DemoDbInUseError(
                f"{mask_url(url)} holds {client.dbsize()} keys and no {MARKER_KEY} key: it is not the "
                "demo's, so the demo leaves it alone. Give an empty DB with --redis-url redis://HOST:PORT/N."
            )
        client.flushdb()
        client.set(MARKER_KEY, json.dumps({"created_by": "unsub demo", "at": time.time()}))
    finally:
        client.close()


def clean_demo_db(url: str) -> int:
    """Remove what earlier demos left in the DB at ``url`` (marker included); returns the keys removed.

    Refuses a DB holding data that is not the demo's, as the demo itself does."""
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        size = int(client.dbsize())
        if size and not client.exists(MARKER_KEY):
            raise DemoDbInUseError(
                f"{mask_url(url)} holds {size} keys and no {MARKER_KEY} key: it is not the demo's, "
                "so nothing was removed"
            )
        client.flushdb()
        return size
    finally:
        client.close()


@dataclass(frozen=True)
class Leftover:
    """What a finished demo leaves in its DB."""

    keys: int
    #: Keys that expire on their own (request status, dedupe windows, tokens...).
    expiring: int
    #: The longest time-to-live among them.
    longest_ttl_s: float


def leftover(url: str) -> Leftover:
    """Count the demo DB's keys and their time-to-live (a few thousand keys: one pipelined pass)."""
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        names = list(client.scan_iter(count=LEFTOVER_SCAN_COUNT))
        pipe = client.pipeline(transaction=False)
        for name in names:
            pipe.ttl(name)
        ttls = [int(t) for t in pipe.execute()]
    finally:
        client.close()
    expiring = [t for t in ttls if t > 0]
    return Leftover(len(names), len(expiring), float(max(expiring, default=0)))


@dataclass
class DemoRedis:
    url: str
    description: str
    embedded: EmbeddedRedis | None = None

    def stop(self) -> None:
        if self.embedded is not None:
            self.embedded.stop()
            shutil.rmtree(self.embedded.workdir, ignore_errors=True)  # its log; nothing is persisted


def choose_redis(configured_url: str, *, explicit: bool) -> DemoRedis:
    """The Redis the demo runs on (see the module docstring). Raises the two errors above."""
    url = demo_db_url(configured_url, explicit=explicit)
    if redis_answers(url):
        claim_demo_db(url)
        return DemoRedis(url, f"DB {_db(url)} of the Redis at {mask_url(_server(url))} (marked {MARKER_KEY})")
    if explicit:
        raise RedisUnavailableError(f"no Redis answers at {mask_url(url)}")
    embedded = EmbeddedRedis().start()
    try:
        claim_demo_db(embedded.url)
    except BaseException:
        embedded.stop()
        raise
    why = f"nothing answered at {mask_url(configured_url)}"
    return DemoRedis(embedded.url, f"an embedded Redis on 127.0.0.1:{embedded.port} ({why})", embedded)


def _server(url: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=""))


def _db(url: str) -> str:
    return urlsplit(url).path.strip("/") or "0"


# -- the run -----------------------------------------------------------------------------------


@dataclass
class DemoOptions:
    requests: int = DEFAULT_REQUESTS
    timeout_s: float = DEFAULT_TIMEOUT_S
    #: Keep config and process logs here (else a temporary directory, removed at the end).
    keep_logs: Path | None = None
    seed: int = 7


@dataclass
class DemoResult:
    report: Report
    mix: Mix
    snapshot: Snapshot
    sandbox_url: str
    workdir: Path | None
    settled: bool = True
    problem: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.settled and self.report.ok


#: stage(text) and progress(done, total) callbacks: the CLI shows them, tests may ignore them.
Stage = Callable[[str], None]
Progress = Callable[[int, int], None]


def _quiet_stage(text: str) -> None:
    return None


def _quiet_progress(done: int, total: int) -> None:
    return None


@contextlib.contextmanager
def isolated_environ() -> Iterator[None]:
    """Hide the caller's ``UNSUB_*`` variables: the demo's processes read only the demo's config."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("UNSUB_")}
    for name in saved:
        del os.environ[name]
    try:
        yield
    finally:
        os.environ.update(saved)


def demo_config(data: dict[str, Any]) -> None:
    """LocalStack config hook: the demo's rate limits."""
    for conn in data["connections"]:
        if conn["name"] in DEMO_RATE_LIMITS:
            conn["rate_limit"] = DEMO_RATE_LIMITS[conn["name"]]


def sandbox_config() -> Any:
    return load_config(overrides={"auto_contacts": AUTO_CONTACTS, "easytools": {"rate_limit_per_minute": 0}})


def outcomes(snapshot: Snapshot) -> int:
    """Records that reached an outcome (delivered or dead), plus invalid messages."""
    done = sum(
        c.counters.get("delivered", 0) + c.counters.get("dead_lettered", 0) for c in snapshot.connections
    )
    return done + snapshot.intake.get("invalid", 0)


def run_demo(
    redis_url: str,
    options: DemoOptions,
    *,
    stage: Stage = _quiet_stage,
    progress: Progress = _quiet_progress,
) -> DemoResult:
    """Run the demo against the (already claimed) Redis at ``redis_url``; stops all it started."""
    mix = build_mix(options.requests, seed=options.seed)
    with contextlib.ExitStack() as cleanup, isolated_environ():
        workdir = options.keep_logs
        if workdir is None:
            temp = Path(tempfile.mkdtemp(prefix="unsub-demo-"))
            cleanup.callback(shutil.rmtree, temp, ignore_errors=True)
        else:
            workdir.mkdir(parents=True, exist_ok=True)
        server = cleanup.enter_context(SandboxServer(sandbox_config(), port=0))
        stage(f"sandbox providers on {server.url} (auto_contacts: every address except unknown-*)")
        local = LocalStack(
            workdir or temp, redis_url=redis_url, sandbox_url=server.url, config_hook=demo_config
        )
        cleanup.enter_context(local)
        stage("starting a worker (2 processes) and the scheduler")
        local.start_worker("demo", concurrency=2)
        local.start_scheduler()
        control = cleanup.enter_context(httpx.Client(base_url=server.url, timeout=10))
        result = _publish_and_wait(local, control, mix, options.timeout_s, stage, progress)
        result.sandbox_url = server.url
        result.workdir = workdir
        return result
    raise AssertionError("unreachable")  # pragma: no cover  (mypy: ExitStack may swallow)


def _publish_and_wait(
    local: LocalStack, control: httpx.Client, mix: Mix, timeout_s: float, stage: Stage, progress: Progress
) -> DemoResult:
    deadline = time.monotonic() + timeout_s
    outage = Outage(control, stage)
    outage.begin()
    published = 0
    snapshot: Snapshot | None = None
    problem = None
    with local.producer() as producer:
        for n, (wave, invalid) in enumerate(zip(mix.waves, mix.invalid_waves, strict=True)):
            if n:
                _post(control, EXPIRE_PATH, {"provider": TOKEN_PROVIDER})
                stage(f"{TOKEN_PROVIDER} JWT expired by the sandbox")
            producer.publish_many(wave)
            for message in invalid:  # plain JSON, as a service in another language sends it
                local.redis.xadd(names.NATIVE_INTAKE_STREAM, {names.NATIVE_INTAKE_FIELD: json.dumps(message)})
            published += len(wave) + len(invalid)
            stage(f"wave {n + 1}: published {len(wave)} requests and {len(invalid)} invalid message(s)")
            snapshot, problem = _wait(local, published, mix.outcomes, deadline, progress, outage.tick)
            if problem:
                break
    assert snapshot is not None
    state = control.get(STATE_PATH).raise_for_status().json()
    report = build_report(
        snapshot,
        state,
        local.settings,
        mix,
        expired_token_provider=TOKEN_PROVIDER if len(mix.waves) > 1 else None,
        outage_provider=OUTAGE_PROVIDER,
    )
    return DemoResult(
        report=report,
        mix=mix,
        snapshot=snapshot,
        sandbox_url="",
        workdir=None,
        settled=problem is None,
        problem=problem,
    )


def _wait(
    local: LocalStack,
    expected_requests: int,
    total: int,
    deadline: float,
    progress: Progress,
    tick: Callable[[], None],
) -> tuple[Snapshot, str | None]:
    """Show progress until settled, then confirm with ``wait_settled``; a problem text if it never settles."""
    from unsub_dev.errors import NotSettledError

    while True:
        tick()
        snap = local.snapshot()
        progress(outcomes(snap), total)
        if local.is_settled(snap, expected_requests) and local.queued_messages() == 0:
            break
        if time.monotonic() > deadline:
            break
        time.sleep(POLL_INTERVAL_S)
    try:
        snap = local.wait_settled(
            expected_requests=expected_requests, timeout_s=max(deadline - time.monotonic(), 1.0)
        )
    except NotSettledError as exc:
        return local.snapshot(), str(exc)
    progress(outcomes(snap), total)
    return snap, None


@dataclass
class Outage:
    """The outage of OUTAGE_PROVIDER: on from :meth:`begin`, off at the first :meth:`tick` after
    OUTAGE_S once the sandbox answered at least one call with OUTAGE_STATUS."""

    control: httpx.Client
    stage: Stage
    started: float = 0.0
    over: bool = False

    def begin(self) -> None:
        fault = {"error_rate": 1.0, "error_status": OUTAGE_STATUS}
        _post(self.control, FAULTS_PATH, {OUTAGE_PROVIDER: fault})
        self.started = time.monotonic()
        self.stage(f"{OUTAGE_PROVIDER} answers {OUTAGE_STATUS} (outage) until its first calls have failed")

    def tick(self) -> None:
        if self.over or time.monotonic() - self.started < OUTAGE_S:
            return
        state = self.control.get(STATE_PATH).raise_for_status().json()
        failed = rejected_calls(state["providers"][OUTAGE_PROVIDER], str(OUTAGE_STATUS))
        if failed:
            _post(self.control, FAULTS_PATH, {OUTAGE_PROVIDER: {}})
            self.over = True
            self.stage(f"{OUTAGE_PROVIDER} back after {failed} failed call(s)")


def _post(control: httpx.Client, path: str, body: dict[str, Any]) -> None:
    control.post(path, json=body).raise_for_status()
