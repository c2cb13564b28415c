"""Draining one connection's buffer: claim records, batch them, deliver, record every outcome.

One delivery task runs :func:`drain` for one connection for at most ``drain_budget_s``:

1. take a drain slot (at most ``max_parallel`` tasks per connection);
2. ask the circuit breaker what is allowed: normal, one probe batch, or nothing (open: the drain
   ends at once and leaves the records in the buffer, so a long outage costs no writes);
3. before each batch, ask the shared rate limit: when the connection's next turn is not now, the
   drain ends (and quiets the connection's trigger until that turn) rather than occupy a worker
   process waiting; the scheduler starts it again at the next tick after the turn comes;
4. claim records (:mod:`worker.pipeline.claims`: own after a restart, dead consumers', hung ones',
   then new), decide what needs no call (prechecks, corrupt or poison entries), group the rest by the
   adapter's batch key into batches of at most ``max_batch_size``, deliver each batch and record its
   outcomes in one transaction (:mod:`worker.pipeline.outcomes`). While a batch is out, this process's
   keeper keeps its claims fresh (:class:`worker.pipeline.liveness.Keeper`).

Records still claimed when the budget runs out, the breaker opens or the worker is told to stop
(SIGTERM) are handed back with a due time, so a warm shutdown waits for one batch, not for a whole
drain budget. A task's counts are added up across its runs (:mod:`worker.pipeline.task_counts`).
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from pydantic import ValidationError

from worker import keys
from worker.adapters.base import Outcome, OutcomeKind
from worker.logs import bind, get_logger
from worker.pipeline import buffer, claims, counters, deadletters, slots, task_counts, trigger
from worker.pipeline.breaker import Mode
from worker.pipeline.counters import Counter
from worker.pipeline.deadletters import Reason
from worker.pipeline.observe import BATCH_BUCKETS, BATCH_HISTOGRAM, observe
from worker.pipeline.outcomes import HoldCause, OutcomeWriter
from worker.pipeline.task_counts import DrainReport
from worker.reasons import NOT_AN_ATTEMPT, DeadReason, RetryCause
from worker.records import DeliveryRecord
from worker.settings import Connection

if TYPE_CHECKING:
    from worker.adapters.base import Adapter
    from worker.pipeline.runtime import Runtime

log = get_logger(__name__)

#: Claim at least this many records at a time, even for one-record-per-call providers.
MIN_READ: Final = 10
#: Claim at most this many records at a time.
MAX_READ: Final = 1000
#: A held batch's claims stay fresh for its drain's budget plus this many call timeouts...
HOLD_TIMEOUTS: Final = 3
#: ...plus this margin (a whole-batch refusal may split the batch for up to 10 s more).
HOLD_MARGIN_S: Final = 30.0
#: A connection whose next turn is further than this ends its drain rather than wait for it.
TURN_WAIT_S: Final = 0.05
#: The longest a connection's trigger stays quiet after its drain ended on the rate limit.
MAX_QUIET_S: Final = 60.0


@dataclass(frozen=True)
class Claimed:
    entry_id: str
    record: DeliveryRecord


def drain(
    rt: Runtime, connection_name: str, *, budget_s: float | None = None, task_id: str | None = None
) -> DrainReport:
    """Deliver what waits for one connection, for at most ``budget_s`` (default from settings).

    With ``task_id``, the counts are also added up in Redis under that id, atomically with the
    outcomes, and the report returns the totals of every run of that task.
    """
    started = time.monotonic()
    report = DrainReport(connection=connection_name)
    _drain(rt, connection_name, report, started, budget_s, task_id)
    if task_id is not None:  # even when skipped: an earlier, killed run may have recorded batches
        task_counts.take_totals(rt.redis, report, task_id)
    report.duration_s = round(time.monotonic() - started, 4)
    return report


def _drain(
    rt: Runtime,
    connection_name: str,
    report: DrainReport,
    started: float,
    budget_s: float | None,
    task_id: str | None,
) -> None:
    try:
        conn = rt.settings.connection(connection_name)
    except KeyError:
        report.skipped = DeadReason.UNKNOWN_CONNECTION
        return
    if not conn.enabled:
        report.skipped = "disabled"
        return
    budget = budget_s if budget_s is not None else rt.settings.drain_budget_s
    with bind(connection=conn.name), slots.hold(rt.redis, conn.name, conn.max_parallel, budget * 3) as free:
        if not free:
            report.skipped = "busy"
            return
        try:
            _Drainer(rt, conn, report, deadline=started + budget, task_id=task_id).run()
        except BaseException:
            # Records this drain claimed stay pending under this process's name: its next drain of
            # the connection takes them back at once instead of leaving them to reclaim_idle_s.
            rt.claim_state.forget(conn.name)
            raise


class _Drainer:
    """One drain of one connection."""

    def __init__(
        self,
        rt: Runtime,
        conn: Connection,
        report: DrainReport,
        *,
        deadline: float,
        task_id: str | None = None,
    ) -> None:
        self.rt = rt
        self.conn = conn
        self.report = report
        self.deadline = deadline
        self.adapter: Adapter = rt.adapter(conn)
        self.breaker = rt.breaker(conn)
        self.gate = rt.gate(conn)
        self.consumer = rt.consumer_name
        self.read_count = max(MIN_READ, min(MAX_READ, self.adapter.max_batch_size))
        self.counts_key = task_counts.key(task_id) if task_id is not None else None
        #: Counts not yet committed (batches, records reclaimed): they go with the next transaction.
        self._batches = 0
        self._reclaimed = 0

    def run(self) -> None:
        mode = self.breaker.mode()
        self.report.mode = mode.value
        if mode is Mode.HOLD:
            self.report.skipped = "breaker_open"
            self._quiet(self.breaker.open_until() - time.time())
            return
        while not self._out_of_time() and not self._no_turn():
            claimed = self._claim()
            if not claimed:
                return
            mode = self._process(claimed, mode)
            if mode is Mode.HOLD:
                return
            if mode is Mode.PROBE:
                # The probe decided nothing (nothing needed a call): let the next drain probe.
                self.breaker.release_probe()
                return

    def _out_of_time(self) -> bool:
        """The budget is spent or the worker is shutting down: no new batch starts."""
        if time.monotonic() >= self.deadline:
            return True
        if self.rt.stop_requested():
            if not self.report.stopped:
                log.info("worker shutting down: handing back what this drain still holds")
            self.report.stopped = True
            return True
        return False

    def _no_turn(self) -> bool:
        """The rate limit gives this connection no turn now: end, and quiet its trigger until then."""
        wait_s = self.gate.wait_s()
        if wait_s <= TURN_WAIT_S:
            return False
        self.report.paused_for_rate_limit_s = round(wait_s, 3)
        self._quiet(wait_s)
        return True

    def _quiet(self, seconds: float) -> None:
        """Nothing to do for ``seconds``: keep new triggers away until then (capped), and have one
        delivery task start when that time comes (not at the scheduler's next tick)."""
        quiet_ms = int(min(max(seconds, 0.0), MAX_QUIET_S) * 1000)
        if quiet_ms > 0:
            self.rt.redis.set(keys.trigger(self.conn.name), "quiet", px=quiet_ms)
            trigger.trigger_later(self.rt, self.conn, seconds)

    def _claim(self) -> list[buffer.Entry]:
        got = claims.claim(
            self.rt.redis,
            self.rt.claim_state,
            self.conn.name,
            self.consumer,
            count=self.read_count,
            reclaim_idle_s=self.rt.settings.reclaim_idle_s,
        )
        if got.reclaimed:
            self.report.reclaimed += len(got.entries)
            self._reclaimed += len(got.entries)
            log.info("took over claimed records", records=len(got.entries))
        return got.entries

    def _process(self, entries: list[buffer.Entry], mode: Mode) -> Mode:
        writer = self._writer()
        claimed = self._readable(entries, writer)
        pending = self._prechecked(claimed, writer)
        self._commit(writer)
        return self._deliver_all(
            list(_batches(pending, self.adapter.batch_key, self.adapter.max_batch_size)), mode
        )

    def _deliver_all(self, batches: list[list[Claimed]], mode: Mode) -> Mode:
        """Deliver batch after batch while the breaker, the rate limit and the budget allow; hand
        back the rest."""
        current: Mode = mode
        for index, batch in enumerate(batches):
            remaining = [c for b in batches[index:] for c in b]
            if current is Mode.HOLD or (index and (self._out_of_time() or self._no_turn())):
                self._hand_back(remaining, current)
                break
            with self._claims_kept([c.entry_id for c in remaining]):
                current = self._deliver(batch, current)
        return current

    @contextmanager
    def _claims_kept(self, entry_ids: list[str]) -> Iterator[None]:
        """While a batch is out, this process's keeper keeps its claims fresh: a provider call
        (rate-limit waits, retries inside the adapter, a slow provider) may outlast the liveness
        window, and a record taken over while its call is in flight would be delivered twice. The
        keeper gives up after the drain's budget and a few call timeouts (a hung process), leaving
        the records to ``reclaim_idle_s``.
        """
        keeper = self.rt.keeper()
        hold_s = (
            max(self.deadline - time.monotonic(), 0.0) + HOLD_TIMEOUTS * self.conn.timeout_s + HOLD_MARGIN_S
        )
        ticket = keeper.hold(keys.buffer_stream(self.conn.name), keys.BUFFER_GROUP, entry_ids, for_s=hold_s)
        try:
            yield
        finally:
            keeper.release(ticket)

    def _readable(self, entries: list[buffer.Entry], writer: OutcomeWriter) -> list[Claimed]:
        """Parse entries; corrupt ones and poison (claimed too often) are dead-lettered."""
        claimed = []
        for entry in entries:
            record = _parse(entry.payload)
            if record is None:
                letter = _corrupt_letter(entry, self.conn)
                writer.dead_letter(entry.entry_id, letter, None)
            elif entry.deliveries > buffer.MAX_DELIVERIES:
                message = f"claimed {entry.deliveries} times without an outcome: its delivery kills workers"
                letter = deadletters.for_record(
                    record, reason=Reason.POISON_RECORD, message=message, provider=self.conn.type
                )
                writer.dead_letter(entry.entry_id, letter, record)
            else:
                claimed.append(Claimed(entry.entry_id, record))
        return claimed

    def _prechecked(self, claimed: list[Claimed], writer: OutcomeWriter) -> list[Claimed]:
        """Record outcomes decided without a call; return the records that need one."""
        pending = []
        for item in claimed:
            decided = self.adapter.precheck(item.record)
            if decided is None:
                pending.append(item)
            else:
                writer.record(item.entry_id, item.record, decided, attempted=False)
        return pending

    def _deliver(self, batch: list[Claimed], mode: Mode) -> Mode:
        records = [c.record for c in batch]
        outcomes = self._call(records)
        writer = self._writer()
        mode = self._judge(outcomes, mode)
        for item, outcome in zip(batch, outcomes, strict=True):
            if outcome.kind is OutcomeKind.REAUTH:
                until = self.breaker.open_until()
                writer.hold(
                    item.entry_id, item.record, HoldCause.AUTH_FAILED, until=until, detail=outcome.message
                )
            else:
                writer.record(item.entry_id, item.record, outcome)
        self.report.batches += 1
        self._batches += 1
        observe(writer.pipe, self.conn.name, BATCH_HISTOGRAM, len(batch), BATCH_BUCKETS)
        counters.incr(writer.pipe, self.conn.name, Counter.BATCHES)
        self._commit(writer)
        return mode

    def _call(self, records: list[DeliveryRecord]) -> list[Outcome]:
        """The adapter call, guarded: an adapter bug must not lose the batch or crash the worker."""
        try:
            outcomes = self.adapter.deliver(records)
        except Exception as exc:
            log.exception("adapter raised instead of returning outcomes", adapter=type(self.adapter).__name__)
            return [Outcome.retry(RetryCause.ADAPTER_ERROR, f"{type(exc).__name__}: {exc}")] * len(records)
        if len(outcomes) != len(records):
            log.error(
                "adapter returned the wrong number of outcomes", expected=len(records), got=len(outcomes)
            )
            return [Outcome.retry(RetryCause.ADAPTER_ERROR, "wrong number of outcomes")] * len(records)
        return outcomes

    def _judge(self, outcomes: list[Outcome], mode: Mode) -> Mode:
        """Tell the breaker how the batch went; returns what the drain may do next."""
        refused = next((o for o in outcomes if o.kind is OutcomeKind.REAUTH), None)
        if refused is not None:
            self.breaker.trip(DeadReason.AUTH_FAILED, detail=refused.message)
            return Mode.HOLD
        if _provider_failed(outcomes):
            reason = outcomes[0].reason or "failure"
            return Mode.HOLD if self.breaker.on_failure(reason, probe=mode is Mode.PROBE) else mode
        if any(o.kind in (OutcomeKind.DELIVERED, OutcomeKind.DEAD) for o in outcomes):
            self.breaker.on_success()
            return Mode.NORMAL
        return mode

    def _hand_back(self, claimed: list[Claimed], mode: Mode) -> None:
        """Records claimed but not delivered in this drain go back with a due time."""
        writer = self._writer()
        if mode is Mode.HOLD:
            self._hold(claimed, writer, HoldCause.BREAKER_OPEN, until=self.breaker.open_until())
        else:
            self._hold(claimed, writer, HoldCause.HANDED_BACK, until=writer.now)
        self._commit(writer)

    def _hold(
        self, claimed: Sequence[Claimed], writer: OutcomeWriter, cause: HoldCause, *, until: float
    ) -> None:
        for item in claimed:
            writer.hold(item.entry_id, item.record, cause, until=until)

    def _writer(self) -> OutcomeWriter:
        return OutcomeWriter(self.rt.redis, self.conn, self.rt.settings.status_retention_s, self.rt.rng)

    def _commit(self, writer: OutcomeWriter) -> None:
        calls = self.rt.recorder(self.conn).flush(writer.pipe, self.conn.name)
        if self.counts_key is not None:
            task_counts.queue(
                writer.pipe,
                self.counts_key,
                writer.tally,
                calls=calls,
                batches=self._batches,
                reclaimed=self._reclaimed,
                ttl_s=self.rt.settings.result_expires_s,
            )
        self.report.provider_calls += calls
        self.report.add(writer.commit())
        self._batches = self._reclaimed = 0


def _provider_failed(outcomes: list[Outcome]) -> bool:
    """Every record of the batch failed transiently for a reason that is the provider's."""
    return bool(outcomes) and all(
        o.kind is OutcomeKind.RETRY and (o.reason or "") not in NOT_AN_ATTEMPT for o in outcomes
    )


def _batches(claimed: list[Claimed], key: Any, size: int) -> Iterator[list[Claimed]]:
    """Group by batch key (keeping arrival order within a group), then cut to ``size``."""
    groups: dict[Hashable, list[Claimed]] = {}
    for item in claimed:
        groups.setdefault(key(item.record), []).append(item)
    for members in groups.values():
        for start in range(0, len(members), max(size, 1)):
            yield members[start : start + size]


def _parse(payload: str | None) -> DeliveryRecord | None:
    if payload is None:
        return None
    try:
        return DeliveryRecord.model_validate_json(payload)
    except ValidationError:
        return None


def _corrupt_letter(entry: buffer.Entry, conn: Connection) -> deadletters.DeadLetter:
    return deadletters.DeadLetter(
        id=deadletters.message_letter_id(f"{conn.name}|{entry.entry_id}"),
        reason=Reason.CORRUPT_RECORD,
        message="buffer entry is not a readable delivery record",
        dead_at=time.time(),
        connection=conn.name,
        provider=conn.type,
        raw=(entry.payload or "")[: deadletters.RAW_MESSAGE_CHARS],
    )
