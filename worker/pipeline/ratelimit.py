"""Rate limits shared by every worker: an exact moving window in Redis per connection.

Each limit of a connection (``4/second;10000/day``, parsed by the ``limits`` package) is a sorted
set of send times. One Lua script checks every limit and records the send only if all allow it, so
workers never exceed any limit together. Times come from the Redis server's clock (no skew between
pods) and a small margin keeps arrivals at the provider inside its window despite network jitter.
(The ``limits`` package's own moving window stamps hits with each client's clock and has no margin;
a test with four threads saw six requests inside one second with it.)

A worker waits for its turn rather than collect 429s. If its turn is further away than it may wait
(``max_wait_s``: a daily limit is spent), :class:`~worker.errors.RateLimitedError` tells the adapter
to put the records back with a due time; that wait does not count as a failed attempt. A 429 that
happens anyway sets a cooldown that every worker on the connection honours.
"""

from __future__ import annotations

import random
import time
import uuid
from typing import Final

import redis
from limits import RateLimitItem, parse_many

from worker import keys
from worker.errors import RateLimitedError

#: Longest a worker blocks waiting for its turn before handing the records back with a due time.
DEFAULT_MAX_WAIT_S: Final = 10.0
#: Cooldown after a 429 that carried no Retry-After.
DEFAULT_COOLDOWN_S: Final = 1.0
#: Every window is treated as this much longer, so jitter on the way cannot push a send into it.
WINDOW_MARGIN_MS: Final = 30
#: Spread of the extra wait, so workers woken at once do not collide again.
WAKE_JITTER_S: Final = 0.01
_MIN_WAIT_S: Final = 0.002

# KEYS: one sorted set per limit. ARGV[1]: margin ms, ARGV[2]: unique member ("" only looks: nothing
# is recorded), then per limit: amount, window ms. Returns 0 (sent recorded) or the ms to wait.
_TAKE: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local margin = tonumber(ARGV[1])
local wait = 0
for i, key in ipairs(KEYS) do
  local amount = tonumber(ARGV[1 + 2 * i])
  local window = tonumber(ARGV[2 + 2 * i])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window - margin)
  if redis.call('ZCARD', key) >= amount then
    local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    local w = tonumber(oldest[2]) + window + margin - now
    if w > wait then wait = w end
  end
end
if wait > 0 or ARGV[2] == '' then return wait end
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now, ARGV[2])
  redis.call('PEXPIRE', key, tonumber(ARGV[2 + 2 * i]) + margin + 1000)
end
return 0
"""


class RedisGate:
    """Admission for one connection's requests (implements ``CallGate``)."""

    def __init__(
        self,
        client: redis.Redis,
        namespace: str,
        limits_text: str | None,
        *,
        max_wait_s: float = DEFAULT_MAX_WAIT_S,
    ) -> None:
        self._client = client
        self._namespace = namespace
        items: list[RateLimitItem] = parse_many(limits_text) if limits_text else []
        self._keys = [f"{keys.rate_limit_namespace(namespace)}:{item.key_for()}" for item in items]
        self._args: list[int] = []
        for item in items:
            self._args += [item.amount, item.get_expiry() * 1000]
        self._max_wait_s = max_wait_s
        self._cooldown_key = keys.rate_cooldown(namespace)
        self._take = client.register_script(_TAKE)

    @property
    def limited(self) -> bool:
        return bool(self._keys)

    def acquire(self) -> None:
        """Block until one request may go; raise ``RateLimitedError`` if that is too far away."""
        started = time.monotonic()
        while True:
            wait = self._cooldown_left_s() or self._try_take()
            if wait <= 0:
                return
            if time.monotonic() - started + wait > self._max_wait_s:
                raise RateLimitedError(
                    f"rate limit for {self._namespace} spent for {wait:.1f}s", retry_after_s=wait
                )
            time.sleep(wait + random.uniform(0, WAKE_JITTER_S))

    def wait_s(self) -> float:
        """Seconds until one request may go (0: now), without taking the turn."""
        cooldown = self._cooldown_left_s()
        if cooldown > 0 or not self._keys:
            return cooldown
        wait_ms = int(self._take(keys=self._keys, args=[WINDOW_MARGIN_MS, "", *self._args]))
        return max(wait_ms, 0) / 1000.0

    def penalize(self, retry_after_s: float | None) -> None:
        """The provider said 429: every worker on this connection pauses for ``retry_after_s``."""
        pause_ms = int(max(retry_after_s or DEFAULT_COOLDOWN_S, _MIN_WAIT_S) * 1000)
        current = self._client.pttl(self._cooldown_key)
        if current is None or int(current) < pause_ms:
            self._client.set(self._cooldown_key, "429", px=pause_ms)

    def _cooldown_left_s(self) -> float:
        remaining_ms = self._client.pttl(self._cooldown_key)
        return max(int(remaining_ms or 0), 0) / 1000.0

    def _try_take(self) -> float:
        """Record one send under every limit; 0 when done, else seconds until the blocking one frees."""
        if not self._keys:
            return 0.0
        wait_ms = int(self._take(keys=self._keys, args=[WINDOW_MARGIN_MS, uuid.uuid4().hex, *self._args]))
        return max(wait_ms / 1000.0, _MIN_WAIT_S) if wait_ms > 0 else 0.0
