"""A circuit breaker per connection, shared by every worker through Redis.

closed ──(failure_threshold failed batches in a row, or credentials refused)──▶ open
open ──(cool-down over: one worker takes the probe lock)──▶ probe: one batch decides
probe ──success──▶ closed          probe ──failure──▶ open, cool-down doubled (up to max_cooldown_s)

The cool-down never exceeds ``max_cooldown_s`` (the first one included), so however long an outage
lasts a probe goes out at least that often, and delivery resumes within about ``max_cooldown_s`` of
the provider coming back. The probe lock keeps it to one probe batch at a time across all workers.

While a connection is open its records are set aside with a due time (they do not spend attempts);
other connections are unaffected.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

import redis

from worker import keys
from worker.logs import get_logger
from worker.pipeline import counters
from worker.pipeline.counters import Counter
from worker.reasons import DeadReason
from worker.redis_client import text, text_map
from worker.settings import BreakerPolicy

log = get_logger(__name__)

#: The probe lock outlives a crashed probe by at most this long.
PROBE_LOCK_TTL_S: Final = 120.0


class Mode(StrEnum):
    """What a delivery task may do on a connection right now."""

    NORMAL = "normal"
    #: Cool-down over: deliver one batch to find out whether the provider is back.
    PROBE = "probe"
    #: Open: deliver nothing; set records aside until the probe time.
    HOLD = "hold"


class State(StrEnum):
    CLOSED = "closed"
    OPEN = "open"


@dataclass(frozen=True)
class BreakerState:
    state: State
    failures: int = 0
    open_until: float = 0.0
    cooldown_s: float = 0.0
    reason: str | None = None


class Breaker:
    """One connection's breaker."""

    def __init__(self, client: redis.Redis, connection: str, policy: BreakerPolicy) -> None:
        self._client = client
        self._connection = connection
        self._policy = policy
        self._key = keys.breaker(connection)

    def read(self) -> BreakerState:
        raw = text_map(self._client.hgetall(self._key))
        if not raw:
            return BreakerState(State.CLOSED)
        return BreakerState(
            state=State(raw.get("state", State.CLOSED)),
            failures=int(raw.get("failures", 0)),
            open_until=float(raw.get("open_until", 0)),
            cooldown_s=float(raw.get("cooldown_s", 0)),
            reason=raw.get("reason"),
        )

    def mode(self, now: float | None = None) -> Mode:
        now = time.time() if now is None else now
        current = self.read()
        if current.state is State.CLOSED:
            return Mode.NORMAL
        if now < current.open_until:
            return Mode.HOLD
        took = self._client.set(
            keys.breaker_probe(self._connection), "1", nx=True, px=int(PROBE_LOCK_TTL_S * 1000)
        )
        return Mode.PROBE if took else Mode.HOLD

    def on_success(self) -> None:
        """A batch got a meaningful answer: the provider works."""
        current = self.read()
        if current.state is State.OPEN:
            log.info("circuit closed: provider answers again", connection=self._connection)
        if current.state is State.OPEN or current.failures:
            pipe = self._client.pipeline()
            pipe.delete(self._key)
            pipe.delete(keys.breaker_probe(self._connection))
            pipe.execute()

    def on_failure(self, reason: str, *, probe: bool, now: float | None = None) -> bool:
        """A batch failed as a whole (5xx, timeout, connection error). Returns True if now open."""
        now = time.time() if now is None else now
        if probe:
            self._open(reason, self._next_cooldown(self.read().cooldown_s), now)
            return True
        failures = int(self._client.hincrby(self._key, "failures", 1))
        if self.read().state is State.OPEN:
            return True  # another worker opened it meanwhile: this drain holds too
        if failures >= self._policy.failure_threshold:
            self._open(reason, self._next_cooldown(None), now)
            return True
        return False

    def trip(self, reason: str, now: float | None = None, *, detail: str | None = None) -> float:
        """Open at once (credentials refused; ``detail``: the provider's answer). Returns when the
        probe may run."""
        now = time.time() if now is None else now
        current = self.read()
        if current.state is State.OPEN and now < current.open_until:
            return current.open_until
        previous = current.cooldown_s if current.state is State.OPEN else None
        return self._open(reason, self._next_cooldown(previous), now, detail)

    def release_probe(self) -> None:
        """Give up the probe without a verdict (the drain had nothing to send)."""
        self._client.delete(keys.breaker_probe(self._connection))

    def open_until(self) -> float:
        return self.read().open_until

    def _next_cooldown(self, previous_s: float | None) -> float:
        """The first cool-down, or double the previous one; never past ``max_cooldown_s``."""
        wanted = previous_s * 2 if previous_s else self._policy.cooldown_s
        return min(wanted, self._policy.max_cooldown_s)

    def _open(self, reason: str, cooldown_s: float, now: float, detail: str | None = None) -> float:
        until = now + cooldown_s
        was = self.read()
        pipe = self._client.pipeline(transaction=True)
        # The state before this write, read inside the same transaction: when several workers open
        # the breaker at once, exactly one sees it closed, counts the opening and logs it.
        pipe.hmget(self._key, ["state", "reason"])
        pipe.hset(
            self._key,
            mapping={
                "state": State.OPEN.value,
                "open_until": until,
                "cooldown_s": cooldown_s,
                "reason": reason,
                "opened_at": now,
                "failures": was.failures,
            },
        )
        pipe.delete(keys.breaker_probe(self._connection))
        before = pipe.execute()[0]
        was_state, was_reason = (text(v) if v is not None else None for v in before)
        counters.incr(self._client, self._connection, Counter.BREAKER_OPENED)
        if was_state != State.OPEN.value or was_reason != reason:
            if reason == DeadReason.AUTH_FAILED:
                log.error(
                    # No "token:" in the text: the log redactor would take the next word for a secret.
                    "circuit opened: the provider refused the credentials or settings (detail says "
                    "how); check this connection's credentials and settings. Its records are kept "
                    "and retried after each cool-down",
                    connection=self._connection,
                    cooldown_s=cooldown_s,
                    detail=detail,
                )
            else:
                log.warning(
                    "circuit opened", connection=self._connection, reason=reason, cooldown_s=cooldown_s
                )
        return until
