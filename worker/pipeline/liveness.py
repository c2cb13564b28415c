"""Who is alive: a heartbeat per stream consumer, and taking over the claims of the dead at once.

Every consumer of our streams (each worker's intake loop, each delivery process) renews a key
``unsub:alive:<consumer>`` every :data:`HEARTBEAT_S` with a lifetime of :data:`LIVENESS_TTL_S`. A
consumer whose key is gone has been silent that long: it was killed (SIGKILL, OOM, node loss) or is
cut off from Redis. Whoever next claims from the stream takes over that consumer's pending entries
(idle at least :data:`LIVENESS_TTL_S`), so a crash costs seconds, not ``reclaim_idle_s``. Entries a
name still holds from before its current process took it (a restarted worker that does not get to
them) are taken over the same way (:func:`take_over_inherited`).

A dead consumer is then removed from its group once it holds nothing (:func:`drop_if_done`, checked
and done in one script: ``XGROUP DELCONSUMER`` drops whatever the consumer still holds), so the
names of pods that are gone do not pile up in the groups: a group holds the live consumers and the
dead ones whose entries are not taken over yet.

A live consumer keeps the entries it is working on fresh (:class:`Keeper` resets their idle time
while they are held), so a takeover never takes an entry whose owner is alive and connected.
``reclaim_idle_s`` stays as the last resort for a process that is alive but hung: the keeper stops
refreshing a holding once its deadline has passed.

Consumer names are stable across restarts where they can be (``<node>#<process index>``), so a
worker that starts again under the same name takes back its own claims at once; a name already used
by a live process elsewhere falls back to a unique one (:func:`claim_name`). On the same host, a
heartbeat's process counts as live only if it still runs (a zombie left by a SIGKILLed worker does
not: its parent died with it and init may take a second or more to reap it) and is the process that
wrote the heartbeat (a later process that got the same pid is not).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import redis

from worker import keys
from worker.logs import get_logger
from worker.pipeline import streams
from worker.redis_client import text
from worker.redis_scripts import script

log = get_logger(__name__)

#: A consumer silent this long is taken for dead and its claims are taken over.
LIVENESS_TTL_S: Final = 8.0
#: How often a consumer renews its heartbeat and refreshes the claims it holds.
HEARTBEAT_S: Final = 2.0
#: Pending entries looked at per dead consumer and takeover.
TAKEOVER_COUNT: Final = 1000
#: A process that started this much after a heartbeat's token was made cannot have made it (its
#: start time, read from /proc, is rounded to clock ticks against the boot time).
PID_REUSE_SLACK_S: Final = 2.0


def process_token() -> str:
    """Identifies this process for the heartbeat value: host, pid and start time."""
    return f"{socket.gethostname()}|{os.getpid()}|{time.time():.3f}"


def beat(client: redis.Redis, consumer: str, token: str, ttl_s: float = LIVENESS_TTL_S) -> bool:
    """Renew the heartbeat; False when it had lapsed (others may have taken this consumer's claims)."""
    previous = client.set(keys.consumer_alive(consumer), token, px=int(ttl_s * 1000), get=True)
    return previous is not None and text(previous) == token


def forget(client: redis.Redis, consumer: str, token: str) -> None:
    """Remove the heartbeat on a clean exit, if it is still ours (a successor may own the name)."""
    key = keys.consumer_alive(consumer)
    if text(client.get(key) or "") == token:
        client.delete(key)


def claim_name(client: redis.Redis, preferred: str, token: str, ttl_s: float = LIVENESS_TTL_S) -> str:
    """Use ``preferred`` as this process's consumer name unless a live process elsewhere holds it.

    A heartbeat left by a process of this host that no longer runs (this worker before a restart)
    does not count: the name is taken over, and with it its claims.
    """
    key = keys.consumer_alive(preferred)
    if client.set(key, token, px=int(ttl_s * 1000), nx=True):
        return preferred
    holder = text(client.get(key) or "")
    if not holder or holder == token or not _holder_alive(holder):
        client.set(key, token, px=int(ttl_s * 1000))
        return preferred
    unique = f"{preferred}~{os.getpid()}"
    client.set(keys.consumer_alive(unique), token, px=int(ttl_s * 1000))
    log.warning("consumer name in use by a live process; using a unique one", name=preferred)
    return unique


def _holder_alive(holder: str) -> bool:
    host, _, rest = holder.partition("|")
    pid_text, _, started_text = rest.partition("|")
    if host != socket.gethostname() or not pid_text.isdigit():
        return True  # another host: trust its heartbeat
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        started = float(started_text)
    except ValueError:
        started = None
    return _runs_since(pid, started)


def _runs_since(pid: int, token_made: float | None) -> bool:
    """Whether ``pid`` runs (is not a zombie) and already ran when its token was made at ``token_made``."""
    found = _process(pid)
    if found is None:
        return False
    state, started = found
    if state == "Z":
        return False
    return token_made is None or started is None or started <= token_made + PID_REUSE_SLACK_S


def _process(pid: int) -> tuple[str, float | None] | None:
    """A process's state letter and start time (epoch seconds) from /proc, or None if it does not exist.

    Without /proc (not Linux) only its existence is known: state ``?``, start time unknown.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None if Path("/proc/self/stat").exists() else _exists_elsewhere(pid)
    except OSError:
        return ("?", None)  # someone else's process we may not read: keep away from the name
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after its last ")".
    fields = stat[stat.rindex(")") + 2 :].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return fields[0], _boot_time() + int(fields[19]) / ticks


def _exists_elsewhere(pid: int) -> tuple[str, float | None] | None:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return ("?", None)


@functools.cache
def _boot_time() -> float:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    return 0.0


def dead_consumers(client: redis.Redis, stream: str, group: str, *, exclude: str) -> list[str]:
    """Consumers of ``group`` whose heartbeat is gone: those holding pending entries first, then
    those holding none (:func:`take_over` removes them from the group)."""
    try:
        found = client.xinfo_consumers(stream, group)
    except redis.ResponseError:
        return []  # no stream or no group yet
    consumers = [(text(c["name"]), int(c["pending"])) for c in found]
    consumers = [(name, pending) for name, pending in consumers if name != exclude]
    if not consumers:
        return []
    beats = client.mget([keys.consumer_alive(name) for name, _ in consumers])
    dead = [(name, pending) for (name, pending), b in zip(consumers, beats, strict=True) if b is None]
    return [name for name, _ in sorted(dead, key=lambda c: c[1] == 0)]


def take_over(
    client: redis.Redis,
    stream: str,
    group: str,
    me: str,
    *,
    dead: Iterable[str],
    count: int,
    min_idle_s: float = LIVENESS_TTL_S,
) -> list[streams.Claim]:
    """Claim up to ``count`` pending entries of the ``dead`` consumers for ``me``; each one left
    holding nothing is removed from the group."""
    claimed: list[streams.Claim] = []
    removed = 0
    for consumer in dead:
        left = count - len(claimed)
        if left <= 0:
            break
        claimed += streams.claim_from(
            client, stream, group, me, owner=consumer, min_idle_s=min_idle_s, count=left
        )
        removed += drop_if_done(client, stream, group, consumer)
    if claimed:
        log.info("took over the claims of a dead consumer", entries=len(claimed), stream=stream)
    if removed:
        log.info("removed dead consumers that held nothing from the group", consumers=removed, stream=stream)
    return claimed


#: Remove consumer ARGV[2] from group ARGV[1] of stream KEYS[1] if its heartbeat KEYS[2] is gone and
#: it holds no pending entry, in one step: XGROUP DELCONSUMER drops what a consumer still holds, and
#: a process that took the name again in the meantime keeps it. Returns 1 if it was removed, else 0.
_DROP_IF_DONE: Final = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) > 0 then return 0 end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
"""


def drop_if_done(client: redis.Redis, stream: str, group: str, consumer: str) -> bool:
    """Remove a dead consumer that holds nothing from the group; False if it is alive or holds entries."""
    heartbeat = keys.consumer_alive(consumer)
    try:
        return bool(script(client, _DROP_IF_DONE)(keys=[stream, heartbeat], args=[group, consumer]))
    except redis.ResponseError as exc:
        if "NOGROUP" not in str(exc):
            raise
        return False


def take_over_inherited(
    client: redis.Redis, stream: str, group: str, me: str, *, count: int, min_idle_s: float = LIVENESS_TTL_S
) -> list[streams.Claim]:
    """Claim entries a live consumer's name still holds from the process that had the name before.

    A worker restarted under its name takes back its own claims of a connection when one of its
    processes first drains that connection, which may be never (Celery may give those drains to
    others). An entry qualifies when nobody has touched it for ``min_idle_s`` (a live process's
    keeper refreshes what it works on every :data:`HEARTBEAT_S`) and it was handed out before the
    current holder's heartbeat began (so a live but hung holder still keeps its claims until
    ``reclaim_idle_s``).
    """
    claimed: list[streams.Claim] = []
    for consumer, since in _live_holders(client, stream, group, exclude=me):
        rows = streams.pending_of(client, stream, group, consumer, min_idle_s=min_idle_s, count=count)
        now = time.time()
        older = [r for r in rows if now - int(r["time_since_delivered"]) / 1000 < since]
        claimed += streams.claim_rows(client, stream, group, me, older[: count - len(claimed)], min_idle_s)
        if len(claimed) >= count:
            break
    if claimed:
        log.info("took over claims a restarted consumer inherited", entries=len(claimed), stream=stream)
    return claimed


def _live_holders(client: redis.Redis, stream: str, group: str, *, exclude: str) -> list[tuple[str, float]]:
    """Consumers holding entries whose heartbeat beats, with the time their heartbeat's token was made."""
    try:
        summary = client.xpending(stream, group)
    except redis.ResponseError:
        return []
    holders = [text(c["name"]) for c in summary.get("consumers") or [] if int(c["pending"]) > 0]
    holders = [h for h in holders if h != exclude]
    if not holders:
        return []
    beats = client.mget([keys.consumer_alive(h) for h in holders])
    found = []
    for holder, beat_value in zip(holders, beats, strict=True):
        since = _token_made(text(beat_value)) if beat_value is not None else None
        if since is not None:
            found.append((holder, since))
    return found


def _token_made(token: str) -> float | None:
    """When a heartbeat token (``host|pid|time``) was made, if it says."""
    try:
        return float(token.rsplit("|", 1)[1])
    except (IndexError, ValueError):
        return None


@dataclass
class _Holding:
    stream: str
    group: str
    entry_ids: list[str]
    since: float
    until: float


@dataclass
class Keeper:
    """One per process and consumer: a daemon thread that renews the heartbeat every ``interval_s``
    (:data:`HEARTBEAT_S` at most) and keeps the claims this process is working on from looking idle:
    claims held at least ``interval_s`` are refreshed (short batches cost nothing).

    ``hold()`` registers entries for as long as the work on them may legitimately take; ``release()``
    forgets them. ``lapsed`` turns true when a heartbeat was found expired (the process was cut off
    for :data:`LIVENESS_TTL_S`): from then on others may have taken its claims, and refreshes only
    keep what it still owns.
    """

    client: redis.Redis
    consumer: str
    token: str = field(default_factory=process_token)
    interval_s: float = HEARTBEAT_S
    ttl_s: float = LIVENESS_TTL_S
    lapsed: bool = False
    _holdings: dict[int, _Holding] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=itertools.count)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Keeper:
        self.beat_now()
        self._thread = threading.Thread(target=self._run, name=f"keeper-{self.consumer}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.interval_s * 2)
        with contextlib.suppress(redis.RedisError):  # it expires on its own
            forget(self.client, self.consumer, self.token)

    def beat_now(self) -> None:
        if not beat(self.client, self.consumer, self.token, self.ttl_s) and self._thread is not None:
            self.lapsed = True
            log.warning("heartbeat had lapsed: claims may have been taken over", consumer=self.consumer)

    def hold(self, stream: str, group: str, entry_ids: list[str], *, for_s: float) -> int:
        now = time.monotonic()
        with self._lock:
            ticket = next(self._ids)
            self._holdings[ticket] = _Holding(stream, group, list(entry_ids), now, now + for_s)
        return ticket

    def release(self, ticket: int) -> None:
        with self._lock:
            self._holdings.pop(ticket, None)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.beat_now()
                self._refresh(time.monotonic())
            except redis.RedisError as exc:  # the next beat tries again; the TTL covers a blip
                log.warning("heartbeat failed", error=type(exc).__name__)
            except Exception:  # never let the keeper die: a dead keeper makes its claims orphans
                log.exception("keeper step failed")

    def _refresh(self, now: float) -> None:
        with self._lock:
            due = [h for h in self._holdings.values() if now - h.since >= self.interval_s and now < h.until]
        for holding in due:
            kept = streams.refresh_claims(
                self.client, holding.stream, holding.group, self.consumer, holding.entry_ids
            )
            if kept < len(holding.entry_ids):
                log.warning(
                    "some held claims were taken over by another consumer",
                    held=len(holding.entry_ids),
                    kept=kept,
                )
