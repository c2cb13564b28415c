"""The intake loop: one per worker, in its own thread of the main process, never behind delivery.

Both doors end in one Redis stream (``unsub:intake:json``) read by one consumer group:

1. **pump**: waiting Celery task messages move from the intake lists into the stream, atomically
   (:mod:`worker.pipeline.pump`), so no kill can lose one between a pop and its acknowledgement;
2. **claim**: this consumer's own pending entries first (a worker that starts again under the same
   name takes them back at once), then those of consumers whose heartbeat is gone
   (:mod:`worker.pipeline.liveness`), then any idle past :data:`STALE_IDLE_S` (a hung consumer), all
   these one a turn (:data:`PENDING_CLAIM_COUNT`: an entry that crashes its reader crashes alone), then
   new ones, at most :data:`READ_COUNT` and about :data:`READ_BUDGET_BYTES` a read, an entry larger
   than a message may be coming back as its head only (:class:`NewEntries`); with nothing to do, a
   pause of :data:`IDLE_BLOCK_MS`;
3. **read** each entry (:mod:`worker.pipeline.envelope`): an entry taken up more than
   :data:`MAX_DELIVERIES` times without an outcome is poison and is dead-lettered unread;
4. **take in** (:func:`worker.pipeline.intake.run_intake`) in transactions of at most
   :data:`CHUNK_REQUESTS` requests, each entry acknowledged (XACK + XDEL) in the transaction that
   records the last of its requests. A crash before that leaves the entry pending: it is read again,
   and intake is idempotent by request id;
5. after each commit: answer pings, tell Flower (task events) and start delivery of what came in.

Whatever an entry holds, the loop never dies of it: a failure to take in a group is logged and the
group is tried again (its entries stay pending); the process keeps going. Only a Redis that refuses
the loop's own keys for good stops it (WRONGTYPE: the intake stream or an intake list holds another
type of value, say a publisher LPUSHed onto the stream's name): no retry can help, so the loop raises
:class:`~worker.errors.IntakeStoppedError` and `unsub worker` exits 1 with one critical log line.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol

import redis

from producer import names
from worker import keys
from worker.errors import IntakeStoppedError
from worker.logs import bind, get_logger
from worker.pipeline import envelope, liveness, streams, trigger
from worker.pipeline.envelope import Limits, Message
from worker.pipeline.intake import (
    IntakeItem,
    IntakeReport,
    Taken,
    items_from_payloads,
    message_letter,
    run_intake,
)
from worker.pipeline.pump import OVERSIZE_FIELD, OVERSIZE_HEAD_BYTES, OVERSIZE_LENGTH_FIELD, Pump
from worker.redis_client import text

if TYPE_CHECKING:
    from worker.pipeline.runtime import Runtime

log = get_logger(__name__)

#: Entries claimed per read, and about how many bytes of new ones (at least one entry is read).
READ_COUNT: Final = 200
#: Entries taken back at a time after a crash (own, a dead consumer's, hung ones): one, taken in
#: alone, so an entry that kills whoever reads it only adds to its own count, and the neighbours read
#: with it are taken in (one a turn) instead of being dead-lettered as poison along with it.
PENDING_CLAIM_COUNT: Final = 1
READ_BUDGET_BYTES: Final = 16 * 1024 * 1024
#: Most requests recorded in one transaction (a bigger message is split; Redis never stalls long).
CHUNK_REQUESTS: Final = 500
#: Celery messages moved from the lists per turn, and about how many bytes.
PUMP_LIMIT: Final = 500
PUMP_BUDGET_BYTES: Final = 16 * 1024 * 1024
#: With nothing to do, wait this long before looking at the stream and the lists again.
IDLE_BLOCK_MS: Final = 100
#: An entry taken up this many times without an outcome is poison (it kills whoever reads it).
MAX_DELIVERIES: Final = 5
#: Entries idle this long are taken over even from a consumer whose heartbeat still beats.
STALE_IDLE_S: Final = 60.0
#: How often the loop looks for dead consumers' and stale entries.
ORPHAN_CHECK_S: Final = 1.0
STALE_CHECK_S: Final = 10.0
#: Pause after a failed turn (Redis away, a bug), growing to the maximum while failures continue.
FAILURE_PAUSE_S: Final = 0.5
MAX_FAILURE_PAUSE_S: Final = 5.0


# KEYS[1]: the intake stream. ARGV[1], ARGV[2]: group and consumer; ARGV[3]: most entries; ARGV[4]:
# most bytes (at least one entry is read); ARGV[5]: largest entry carried whole; ARGV[6..8]:
# OVERSIZE_FIELD, OVERSIZE_LENGTH_FIELD, OVERSIZE_HEAD_BYTES. Claims new entries one XREADGROUP at a
# time and returns them as XREADGROUP lists them ({id, {field, value, ...}}), except that an entry
# whose values add up to more than ARGV[5] comes back as the head of its largest value and its size.
_READ_NEW: Final = """
local out, bytes = {}, 0
local most, budget, largest = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
while #out < most and bytes < budget do
  local reply = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', 1, 'STREAMS', KEYS[1], '>')
  if not reply then break end
  local entry = reply[1][2][1]
  local fields, size, big = entry[2], 0, 2
  for i = 2, #fields, 2 do
    size = size + string.len(fields[i])
    if string.len(fields[i]) > string.len(fields[big]) then big = i end
  end
  if size > largest then
    entry = {entry[1], {ARGV[6], string.sub(fields[big], 1, tonumber(ARGV[8])), ARGV[7], tostring(size)}}
    size = tonumber(ARGV[8])
  end
  bytes = bytes + size
  out[#out + 1] = entry
end
return out
"""


class NewEntries:
    """Claims new intake entries bounded in bytes as well as in number: an entry larger than a
    message may be never reaches the worker whole, and one read holds about ``budget_bytes``."""

    def __init__(self, client: redis.Redis, *, max_entry_bytes: int) -> None:
        self._client = client
        self._largest = max_entry_bytes
        self._script = client.register_script(_READ_NEW)

    def read(self, consumer: str, *, count: int, budget_bytes: int) -> list[streams.Claim]:
        stream, group = names.NATIVE_INTAKE_STREAM, keys.NATIVE_INTAKE_GROUP
        args: list[str | int] = [group, consumer, count, budget_bytes, self._largest, OVERSIZE_FIELD]
        args += [OVERSIZE_LENGTH_FIELD, OVERSIZE_HEAD_BYTES]
        try:
            reply = self._script(keys=[stream], args=args)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            streams.ensure_group(self._client, stream, group)  # the stream was made by a plain XADD
            reply = self._script(keys=[stream], args=args)
        return [streams.Claim(text(eid), dict(zip(f[::2], f[1::2], strict=True))) for eid, f in reply]


class IntakeSink(Protocol):
    """Told what happened to each Celery message (Flower events, ping answers)."""

    def taken(self, message: Message, counts: dict[str, int]) -> None: ...

    def refused(self, message: Message) -> None: ...

    def ping(self, message: Message) -> None: ...

    def flush(self) -> None: ...


class NullSink:
    def taken(self, message: Message, counts: dict[str, int]) -> None:
        return None

    def refused(self, message: Message) -> None:
        return None

    def ping(self, message: Message) -> None:
        return None

    def flush(self) -> None:
        return None


@dataclass
class _Slice:
    """Part of one message inside one transaction."""

    message: Message
    first: int
    count: int
    last: bool


@dataclass
class _Group:
    """What one transaction takes in."""

    items: list[IntakeItem] = field(default_factory=list)
    slices: list[_Slice] = field(default_factory=list)
    refused: list[Message] = field(default_factory=list)
    controls: list[Message] = field(default_factory=list)

    def acks(self) -> list[str]:
        done = [s.message.entry_id for s in self.slices if s.last]
        return done + [m.entry_id for m in self.refused + self.controls]

    def __bool__(self) -> bool:
        return bool(self.items or self.refused or self.controls)


@dataclass
class IntakeLoop:
    rt: Runtime
    consumer: str
    #: Client for the intake stream (replies decoded with ``surrogateescape``: any bytes survive).
    client: redis.Redis
    sink: IntakeSink = field(default_factory=NullSink)
    _last_orphan_check: float = 0.0
    _last_stale_check: float = 0.0
    _adopted: bool = False
    #: When the last turn ended (monotonic seconds), failed turns included: a loop that stops
    #: turning is stuck, and the worker's liveness heartbeat stops with it.
    last_turn_at: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        settings = self.rt.settings
        self.limits = Limits(settings.max_message_bytes, settings.max_requests_per_message)
        self.pump = Pump(self.client, max_message_bytes=settings.max_message_bytes)
        self.new_entries = NewEntries(self.client, max_entry_bytes=settings.max_message_bytes)

    def run(self, stop: threading.Event) -> None:
        """Turn until ``stop`` is set; a failed turn is logged and tried again after a pause."""
        failures = 0
        log.info("intake loop started", consumer=self.consumer)
        while not stop.is_set():
            try:
                self.turn(block_ms=IDLE_BLOCK_MS)
                self.last_turn_at = time.monotonic()
                failures = 0
            except Exception as exc:  # Redis away, or a bug: never let the loop die
                _stop_if_hopeless(exc)
                failures += 1
                # What the failed turn read stays pending under this name: take it back first.
                self._adopted = False
                pause = min(FAILURE_PAUSE_S * 2 ** min(failures - 1, 8), MAX_FAILURE_PAUSE_S)
                if isinstance(exc, redis.RedisError):
                    error = f"{type(exc).__name__}: {str(exc)[:200]}"
                    log.warning("intake turn failed; trying again", error=error, pause_s=pause)
                else:
                    log.exception("intake turn failed; trying again", pause_s=pause)
                self.last_turn_at = time.monotonic()
                stop.wait(pause)
        log.info("intake loop stopped", consumer=self.consumer)

    def turn(self, *, block_ms: int = 0) -> IntakeReport:
        """One round: pump, claim, take in. Returns what was taken in."""
        moved = self.pump.move(limit=PUMP_LIMIT, budget_bytes=PUMP_BUDGET_BYTES)
        claims = self._claim()
        if not (moved or claims) and block_ms:
            time.sleep(block_ms / 1000)
        total = IntakeReport()
        # Lazily: one message is decoded at a time, as transactions fill, never a whole read's worth
        # (200 entries of 5,000 requests each would be a million requests in memory at once).
        for group in self._groups(self._read(c) for c in claims):
            total.add(self._take_in(group))
        return total

    def drain(self, *, timeout_s: float = 30.0) -> IntakeReport:
        """Turn until nothing waits (tests, the benchmarks' in-process runs)."""
        total = IntakeReport()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            report = self.turn()
            if not (report.requests or report.refused_messages) and not self._waiting():
                break
            total.add(report)
        return total

    # -- claiming -------------------------------------------------------------------------------

    def _claim(self) -> list[streams.Claim]:
        stream, group, me = names.NATIVE_INTAKE_STREAM, keys.NATIVE_INTAKE_GROUP, self.consumer
        now = time.monotonic()
        if not self._adopted:  # after a restart or a failed turn: this name's own pending entries
            own = streams.claim_from(
                self.client, stream, group, me, owner=me, min_idle_s=0, count=PENDING_CLAIM_COUNT
            )
            self._adopted = len(own) < PENDING_CLAIM_COUNT  # a full claim: more may wait
            if own:
                log.info("took back this consumer's own pending intake entries", entries=len(own))
                return own
        if now - self._last_orphan_check >= ORPHAN_CHECK_S:  # (found some: look again next turn)
            dead = liveness.dead_consumers(self.client, stream, group, exclude=me)
            orphans = liveness.take_over(self.client, stream, group, me, dead=dead, count=PENDING_CLAIM_COUNT)
            if orphans:
                return orphans
            self._last_orphan_check = now
        if now - self._last_stale_check >= STALE_CHECK_S:
            stale = streams.claim_stale(
                self.client, stream, group, me, min_idle_s=STALE_IDLE_S, count=PENDING_CLAIM_COUNT
            )
            if stale:
                return stale
            self._last_stale_check = now
        return self.new_entries.read(me, count=READ_COUNT, budget_bytes=READ_BUDGET_BYTES)

    def _waiting(self) -> bool:
        return bool(self.pump.waiting() or self.client.xlen(names.NATIVE_INTAKE_STREAM))

    # -- reading and grouping -------------------------------------------------------------------

    def _read(self, claim: streams.Claim) -> Message:
        raw = {
            k.encode("utf-8", "surrogateescape"): v.encode("utf-8", "surrogateescape")
            for k, v in claim.fields.items()
        }
        if claim.deliveries > MAX_DELIVERIES:
            return envelope.poison(claim.entry_id, raw, claim.deliveries)
        try:
            return envelope.read_entry(claim.entry_id, raw, self.limits)
        except Exception as exc:  # a reader bug must not stop intake: the entry is dead-lettered
            log.exception("reading an intake entry failed", entry_id=claim.entry_id)
            return envelope.unreadable(claim.entry_id, raw, exc)

    def _groups(self, messages: Iterable[Message]) -> Iterator[_Group]:
        """Transactions of at most CHUNK_REQUESTS requests; a bigger message spans several."""
        group = _Group()
        for message in messages:
            if message.unusable is not None:
                group.refused.append(message)
                continue
            if message.control is not None:
                group.controls.append(message)
                continue
            items = items_from_payloads(message.payloads, message.origin, message.problems)
            if group.items and len(group.items) + len(items) > CHUNK_REQUESTS:
                yield group
                group = _Group()
            for first in range(0, max(len(items), 1), CHUNK_REQUESTS):
                part = items[first : first + CHUNK_REQUESTS]
                last = first + CHUNK_REQUESTS >= len(items)
                group.slices.append(_Slice(message, len(group.items), len(part), last))
                group.items += part
                if not last:
                    yield group
                    group = _Group()
        if group:
            yield group

    # -- taking in ------------------------------------------------------------------------------

    def _take_in(self, group: _Group) -> IntakeReport:
        now = time.time()
        letters = [
            message_letter(m.origin, m.unusable.reason, m.unusable.problems, m.unusable.raw, now)
            for m in group.refused
            if m.unusable
        ]
        acks = group.acks()
        with bind(consumer=self.consumer):
            report = run_intake(
                self.rt, group.items, refused=letters, also_in_transaction=_acknowledge(acks), now=now
            )
        self._after(group, report)
        return report

    def _after(self, group: _Group, report: IntakeReport) -> None:
        """Pings, Flower, full batches: after the commit, and never allowed to undo it."""
        try:
            for piece in group.slices:
                if piece.message.kind == "celery" and piece.last:
                    self.sink.taken(piece.message, _counts(report.taken, piece))
            for message in group.refused:
                self.sink.refused(message)
            for message in group.controls:
                if message.control == "ping":
                    self.sink.ping(message)
            self.sink.flush()
            self._trigger(report.touched)
        except Exception:  # told too little, but nothing taken in is lost: the scheduler flushes
            log.exception("after-intake step failed")

    def _trigger(self, connections: set[str]) -> None:
        """Start delivery of what was just taken in, without waiting for the scheduler's tick: at most
        one trigger per connection every ``trigger.TRIGGER_GAP_S``, none while its drains are all busy
        (they take the new records) or while it waits for its rate limit or breaker."""
        for name in sorted(connections):
            trigger.maybe_trigger(self.rt, self.rt.settings.connection(name))


def _stop_if_hopeless(exc: Exception) -> None:
    """Raise :class:`IntakeStoppedError` for a failure every later turn would repeat: a key of the
    loop holding another type of value (the only fix is an operator's)."""
    if isinstance(exc, redis.ResponseError) and "WRONGTYPE" in str(exc):
        problem = "a key of the intake loop holds another type of value"
        raise IntakeStoppedError(
            f"{problem} (intake stream {names.NATIVE_INTAKE_STREAM!r} or an intake list)"
        ) from exc


def _counts(taken: list[Taken], piece: _Slice) -> dict[str, int]:
    mine = taken[piece.first : piece.first + piece.count]
    return {
        "requests": len(piece.message.payloads),
        "accepted": sum(t is Taken.ACCEPTED for t in mine),
        "duplicates": sum(t is Taken.DUPLICATE for t in mine),
        "invalid": sum(t is Taken.INVALID for t in mine),
    }


def _acknowledge(entry_ids: list[str]) -> Any:
    def queue(pipe: Any) -> None:
        if entry_ids:
            pipe.xack(names.NATIVE_INTAKE_STREAM, keys.NATIVE_INTAKE_GROUP, *entry_ids)
            pipe.xdel(names.NATIVE_INTAKE_STREAM, *entry_ids)

    return queue
