"""Consumer-group reads shared by the delivery buffers and the language-neutral intake stream."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

import redis

from worker.redis_client import read_group_entries, stream_entries, text
from worker.redis_scripts import script


@dataclass(frozen=True, slots=True)
class Claim:
    entry_id: str
    fields: dict[str, str]
    #: How many times the entry has been handed to a consumer, this time included.
    deliveries: int = 1


def ensure_group(client: redis.Redis, stream: str, group: str) -> None:
    """Create the stream and its consumer group if they do not exist yet (from the stream's start)."""
    try:
        client.xgroup_create(stream, group, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def read_new(
    client: redis.Redis, stream: str, group: str, consumer: str, count: int, *, block_ms: int = 0
) -> list[Claim]:
    """Claim up to ``count`` entries nobody has claimed yet (waiting up to ``block_ms`` for one)."""
    block = block_ms or None
    try:
        reply = client.xreadgroup(group, consumer, {stream: ">"}, count=count, block=block)
    except redis.ResponseError as exc:
        if "UNBLOCKED" in str(exc):
            return []  # the stream was deleted while we waited on it: nothing to read
        if "NOGROUP" not in str(exc):
            raise
        ensure_group(client, stream, group)  # the stream was created by a plain XADD
        reply = client.xreadgroup(group, consumer, {stream: ">"}, count=count, block=block)
    return [Claim(eid, fields) for eid, fields in read_group_entries(reply)]


def claim_stale(
    client: redis.Redis, stream: str, group: str, consumer: str, *, min_idle_s: float, count: int
) -> list[Claim]:
    """Take over entries idle for ``min_idle_s``, whoever holds them (a consumer that hung)."""
    return _claim_pending(client, stream, group, consumer, None, min_idle_s, count)


def claim_from(
    client: redis.Redis,
    stream: str,
    group: str,
    consumer: str,
    *,
    owner: str,
    min_idle_s: float,
    count: int,
) -> list[Claim]:
    """Take over entries ``owner`` holds (a dead consumer, or this one's own name after a restart:
    then atomically, :func:`claim_own`)."""
    if owner == consumer:
        return claim_own(client, stream, group, consumer, count=count)
    return _claim_pending(client, stream, group, consumer, owner, min_idle_s, count)


def pending_of(
    client: redis.Redis, stream: str, group: str, owner: str | None, *, min_idle_s: float, count: int
) -> list[dict[str, Any]]:
    """XPENDING rows (``message_id``, ``time_since_delivered`` ms, ``times_delivered``) of entries
    idle at least ``min_idle_s``, of ``owner`` or of anyone; none when the group does not exist."""
    min_idle_ms = int(min_idle_s * 1000)
    try:
        rows: list[dict[str, Any]] = client.xpending_range(
            stream, group, min="-", max="+", count=count, idle=min_idle_ms or None, consumername=owner
        )
    except redis.ResponseError as exc:
        if "NOGROUP" not in str(exc):
            raise
        return []
    return rows


def claim_rows(
    client: redis.Redis, stream: str, group: str, consumer: str, rows: list[dict[str, Any]], min_idle_s: float
) -> list[Claim]:
    """XCLAIM the entries of these XPENDING rows that are still idle ``min_idle_s`` (checked by Redis
    entry by entry, so one that its owner or another consumer touched in the meantime is left alone)."""
    if not rows:
        return []
    times = {text(p["message_id"]): int(p["times_delivered"]) + 1 for p in rows}
    ids = _ids(times)
    reply = client.xclaim(stream, group, consumer, int(min_idle_s * 1000), ids)
    claimed = [Claim(eid, fields, times[eid]) for eid, fields in stream_entries(reply)]
    _forget_deleted(client, stream, group, set(times) - {c.entry_id for c in claimed})
    return claimed


def _claim_pending(
    client: redis.Redis,
    stream: str,
    group: str,
    consumer: str,
    owner: str | None,
    min_idle_s: float,
    count: int,
) -> list[Claim]:
    rows = pending_of(client, stream, group, owner, min_idle_s=min_idle_s, count=count)
    return claim_rows(client, stream, group, consumer, rows, min_idle_s)


#: Take back what consumer ARGV[2] of group ARGV[1] holds on stream KEYS[1], at most ARGV[3] entries:
#: one XPENDING of the consumer's entries and one XCLAIM of them in one step, so an entry another
#: consumer took over in the meantime stays theirs (and one taken back here has a fresh idle time, so
#: nobody takes it over afterwards). Returns {id, times delivered, id, ...} and the XCLAIM reply.
_CLAIM_OWN: Final = """
local owned = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', tonumber(ARGV[3]), ARGV[2])
if #owned == 0 then return {{}, {}} end
local ids, counts = {}, {}
for i, entry in ipairs(owned) do
  ids[i] = entry[1]
  counts[2 * i - 1] = entry[1]
  counts[2 * i] = entry[4]
end
return {counts, redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, unpack(ids))}
"""


def claim_own(client: redis.Redis, stream: str, group: str, consumer: str, *, count: int) -> list[Claim]:
    """Take back the entries this consumer's name holds (claimed before a restart), atomically."""
    try:
        counts, entries = script(client, _CLAIM_OWN)(keys=[stream], args=[group, consumer, count])
    except redis.ResponseError as exc:
        if "NOGROUP" not in str(exc):
            raise
        return []
    times = {text(counts[i]): int(counts[i + 1]) + 1 for i in range(0, len(counts), 2)}
    claimed = [Claim(eid, fields, times[eid]) for eid, fields in _scripted_entries(entries)]
    _forget_deleted(client, stream, group, set(times) - {c.entry_id for c in claimed})
    return claimed


def _scripted_entries(reply: list[Any]) -> list[tuple[str, dict[str, str]]]:
    """Stream entries returned by a script (fields as a flat list; a deleted entry as nil)."""
    entries = []
    for item in reply:
        if item and item[0] is not None and item[1] is not None:
            flat = [text(v) for v in item[1]]
            entries.append((text(item[0]), dict(zip(flat[::2], flat[1::2], strict=True))))
    return entries


def _forget_deleted(client: redis.Redis, stream: str, group: str, entry_ids: set[str]) -> None:
    """Acknowledge pending ids whose entries no longer exist (Redis 6.2 keeps them pending).

    Entries leave our streams only together with their recorded outcome, so a missing entry has
    nothing left to process. Ids that still exist were claimed by another consumer: left alone.
    """
    for entry_id in entry_ids:
        if not client.xrange(stream, entry_id, entry_id):
            client.xack(stream, group, entry_id)


#: Reset the idle time of the entries (ARGV[3..]) that consumer ARGV[2] of group ARGV[1] still owns:
#: one XPENDING of the consumer's entries, one XCLAIM of those among ARGV. An entry another consumer
#: took over in the meantime stays theirs (a plain XCLAIM would steal it). Returns how many it kept.
_REFRESH_OWN_CLAIMS: Final = """
local wanted = {}
for i = 3, #ARGV do wanted[ARGV[i]] = true end
local owned = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', #ARGV - 2 + 1000, ARGV[2])
local keep = {}
for _, entry in ipairs(owned) do
  if wanted[entry[1]] then keep[#keep + 1] = entry[1] end
end
local kept = #keep
if kept > 0 then
  keep[kept + 1] = 'JUSTID'
  redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, unpack(keep))
end
return kept
"""


def refresh_claims(client: redis.Redis, stream: str, group: str, consumer: str, entry_ids: list[str]) -> int:
    """Reset the idle time of entries this consumer still holds, so nobody takes them over.

    Returns how many it still held (entries already acknowledged or taken over are left alone).
    """
    if not entry_ids:
        return 0
    return int(script(client, _REFRESH_OWN_CLAIMS)(keys=[stream], args=[group, consumer, *entry_ids]))


def _ids(entry_ids: Iterable[str]) -> list[Any]:
    """Entry ids as redis-py's xclaim annotation wants them."""
    return list(entry_ids)
