"""The scheduler: the pipeline's clock. Run exactly one (others wait as hot standbys).

Every ``flush_interval_s`` it:

- promotes due retries from each connection's retry set back into its buffer (atomic script);
- queues a delivery task for each connection with records waiting (so batches are flushed at least
  that often even when they are not full);
- deletes dead letters older than ``dlq_retention_s`` (a few hundred at most per tick);

and every :data:`TOKEN_REFRESH_EVERY_S` it queues a token refresh for each connection with an
expiring access token. It does this directly against Redis rather than through ``celery beat``
ticks, so Flower shows real work and not one tick task a second.

Leadership is a Redis lease (``SET NX PX``, renewed each tick): a second scheduler stays idle until
the first one's lease lapses, which takes at most :data:`LEASE_TTL_S`.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Final

from producer.names import delivery_queue
from worker import keys
from worker.logs import get_logger
from worker.pipeline import buffer, deadletters, retry, trigger
from worker.pipeline.runtime import Runtime
from worker.providers import provider
from worker.redis_scripts import script

log = get_logger(__name__)

LEASE_TTL_S: Final = 10.0
TOKEN_REFRESH_EVERY_S: Final = 300.0
HEARTBEAT_TTL_S: Final = 60

_RENEW_LEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
"""


@dataclass
class TickReport:
    promoted: int = 0
    triggered: list[str] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)


@dataclass
class Scheduler:
    rt: Runtime
    identity: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    _last_token_refresh: float = 0.0
    _groups_ready: set[str] = field(default_factory=set)

    def run(self, stop: threading.Event) -> None:
        """Tick until ``stop`` is set."""
        interval = self.rt.settings.flush_interval_s
        log.info("scheduler started", interval_s=interval, identity=self.identity)
        leading = False
        while not stop.is_set():
            started = time.monotonic()
            try:
                now_leading = self.hold_lease()
                if now_leading != leading:
                    log.info("scheduler leadership", leading=now_leading, identity=self.identity)
                    leading = now_leading
                if leading:
                    self.tick()
            except Exception:
                log.exception("scheduler tick failed; retrying next interval")
            stop.wait(max(0.0, interval - (time.monotonic() - started)))
        self.release_lease()

    def hold_lease(self) -> bool:
        return bool(
            script(self.rt.redis, _RENEW_LEASE)(
                keys=[keys.SCHEDULER_LEASE], args=[self.identity, int(LEASE_TTL_S * 1000)]
            )
        )

    def release_lease(self) -> None:
        if self.rt.redis.get(keys.SCHEDULER_LEASE) == self.identity:
            self.rt.redis.delete(keys.SCHEDULER_LEASE)

    def tick(self, now: float | None = None) -> TickReport:
        """One round of the clock (also called directly by tests)."""
        now = time.time() if now is None else now
        report = TickReport()
        for conn in self.rt.settings.enabled_connections:
            if conn.name not in self._groups_ready:
                buffer.ensure_group(self.rt.redis, conn.name)
                self._groups_ready.add(conn.name)
            report.promoted += retry.promote_due(self.rt.redis, conn.name, now)
            if buffer.backlog(self.rt.redis, conn.name) and trigger.maybe_trigger(self.rt, conn):
                report.triggered.append(conn.name)
        if now - self._last_token_refresh >= TOKEN_REFRESH_EVERY_S:
            report.tokens = self._refresh_tokens()
            self._last_token_refresh = now
        self.rt.redis.set(keys.SCHEDULER_HEARTBEAT, f"{now:.3f}", ex=HEARTBEAT_TTL_S)
        deadletters.purge_expired(self.rt.redis, self.rt.settings.dlq_retention_s, now=now)
        return report

    def _refresh_tokens(self) -> list[str]:
        names = []
        for conn in self.rt.settings.enabled_connections:
            if provider(conn.type).token_fetch is not None:
                self.rt.send_task(trigger.REFRESH_TOKEN_TASK, [conn.name], delivery_queue(conn.type))
                names.append(conn.name)
        return names
