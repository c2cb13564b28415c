"""Per address: the requests seen for it and its de-duplication windows, in one hash.

``unsub:addr:<sha256 of the address>`` (the address itself is never a key name) holds a field
``r:<request id>`` per request (when it was taken in) and a field ``w:<connection>|<target>`` per
delivery inside the de-duplication window (``<request id> <epoch seconds>``). It is written with the
request's status in the intake transaction and kept ``status_retention_s`` after the last request.
A window is open while its time is less than ``dedupe_window_s`` old; a dead delivery closes it, so a
later request for the same address is not kept out by a failure.

An address sent again and again would refresh that lifetime for ever while its hash grew by one field
per request, so the hash keeps the newest :data:`REQUESTS_KEPT` request ids: intake reads its size
(``HLEN``, with the windows it reads anyway) and, when the requests it is about to add would pass the
cap, trims it first (:func:`trim`: one script that drops the oldest request fields and the windows
that are closed). The trim is its own step before the intake transaction: a crash between the two
only forgets old request ids sooner. Concurrent intakes of one address may each add theirs after
trimming, so the hash may briefly hold a few more.
"""

from __future__ import annotations

from typing import Any, Final

import redis

from worker import keys
from worker.redis_client import text, text_list
from worker.redis_scripts import script

REQUEST_PREFIX: Final = "r:"
WINDOW_PREFIX: Final = "w:"
#: Request ids kept per address (the newest; what ``unsub status --email`` lists). Older ones drop
#: out of the index; their statuses stay until their own retention.
REQUESTS_KEPT: Final = 100

#: Trim the address hash KEYS[1]: keep the newest ARGV[1] request fields (``r:<id>`` → epoch seconds)
#: and drop the windows (``w:...`` → ``<request id> <epoch seconds>``) closed at ARGV[2] (epoch
#: seconds) for a window of ARGV[3] seconds. Returns how many fields it dropped.
_TRIM: Final = """
local flat = redis.call('HGETALL', KEYS[1])
local keep, now, window = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local requests, drop = {}, {}
for i = 1, #flat, 2 do
  local name, value = flat[i], flat[i + 1]
  local prefix = string.sub(name, 1, 2)
  if prefix == 'r:' then
    requests[#requests + 1] = {tonumber(value) or 0, name}
  elseif prefix == 'w:' then
    local opened = tonumber(string.match(value, ' ([^ ]*)$'))
    if opened == nil or window <= 0 or now - opened >= window then drop[#drop + 1] = name end
  end
end
table.sort(requests, function(a, b)
  if a[1] ~= b[1] then return a[1] < b[1] end
  return a[2] < b[2]
end)
for i = 1, #requests - keep do drop[#drop + 1] = requests[i][2] end
for i = 1, #drop, 1000 do
  redis.call('HDEL', KEYS[1], unpack(drop, i, math.min(i + 999, #drop)))
end
return #drop
"""


def window_field(connection: str, target: str) -> str:
    return f"{WINDOW_PREFIX}{connection}|{target}"


def window_value(request_id: str, at: float) -> str:
    return f"{request_id} {at:.3f}"


def open_holder(value: str | None, now: float, window_s: float) -> str | None:
    """The request id holding a window that is still open, else None."""
    if not value or window_s <= 0:
        return None
    request_id, _, at = value.rpartition(" ")
    try:
        opened = float(at)
    except ValueError:
        return None
    return request_id if now - opened < window_s else None


def queue_windows(pipe: Any, email: str, fields: list[str]) -> None:
    """Queue an HMGET of the address's windows (one reply: a list aligned with ``fields``)."""
    pipe.hmget(keys.address(email), fields)


def queue_size(pipe: Any, email: str) -> None:
    """Queue an HLEN of the address's hash (one reply: its number of fields)."""
    pipe.execute_command("HLEN", keys.address(email))


def must_trim(fields: int, adding: int) -> bool:
    """Whether a hash of ``fields`` fields may pass :data:`REQUESTS_KEPT` with ``adding`` requests more
    (its windows are counted too: the trim then finds out what, if anything, must go)."""
    return fields + adding > REQUESTS_KEPT


def trim(client: redis.Redis, email: str, *, adding: int, now: float, window_s: float) -> int:
    """Make room for ``adding`` new requests within :data:`REQUESTS_KEPT` (the oldest go) and drop the
    windows closed at ``now``; returns how many fields were dropped."""
    keep = max(REQUESTS_KEPT - adding, 0)
    return int(script(client, _TRIM)(keys=[keys.address(email)], args=[keep, repr(now), repr(window_s)]))


def write(
    pipe: Any, email: str, request_id: str, at: float, windows: dict[str, str], retention_s: float
) -> None:
    key = keys.address(email)
    pipe.hset(key, mapping={f"{REQUEST_PREFIX}{request_id}": f"{at:.3f}", **windows})
    pipe.expire(key, int(retention_s))


def close_window(pipe: Any, email: str, connection: str, target: str) -> None:
    pipe.hdel(keys.address(email), window_field(connection, target))


def request_ids(client: redis.Redis, email: str) -> list[str]:
    """Every request id seen for the address (also from the set kept by earlier versions)."""
    fields = text_list(client.hkeys(keys.address(email)))
    found = {f[len(REQUEST_PREFIX) :] for f in fields if f.startswith(REQUEST_PREFIX)}
    found |= {text(v) for v in text_list(client.smembers(keys.email_index(email)))}
    return sorted(found)
