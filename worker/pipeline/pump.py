"""The Celery door without a window: task messages move from the intake lists into the intake stream
in one atomic step.

Publishers (the producer library, ``celery-node``, any Celery client) push standard task messages for
``unsub.intake`` onto the Redis list ``unsub.intake`` (and, when they set a priority, onto kombu's
priority lists ``unsub.intake\\x06\\x16<n>``). No Celery consumer pops them: kombu's fetch pops a
message and records it as unacknowledged in a later round trip, and a SIGKILL between the two lost
the message for good. Instead one Lua script pops messages and appends each to the intake stream
(field :data:`CELERY_FIELD`), atomically: a message is always in exactly one of the list or the
stream, whatever process dies when. From the stream on, the consumer group's pending list keeps it
until the transaction that records its requests acknowledges it (:mod:`worker.pipeline.intake_loop`).

A message longer than ``max_bytes`` is not copied whole: its first :data:`OVERSIZE_HEAD_BYTES` go to
the stream under :data:`OVERSIZE_FIELD` with its length, to be dead-lettered as too large.
"""

from __future__ import annotations

from typing import Final

import redis

from producer import names

#: Stream entry field holding a Celery task message (kombu's JSON envelope) moved from the list.
CELERY_FIELD: Final = "celery"
#: Stream entry fields of a Celery message too large to carry: its head and its length in bytes.
OVERSIZE_FIELD: Final = "celery_oversize"
OVERSIZE_LENGTH_FIELD: Final = "bytes"
#: Bytes of an oversized message kept for the dead letter.
OVERSIZE_HEAD_BYTES: Final = 8192
#: kombu's priority lists: the queue name, then ``<name>\x06\x16<step>`` for priority steps 3, 6, 9.
PRIORITY_SEPARATOR: Final = "\x06\x16"
PRIORITY_STEPS: Final = (3, 6, 9)

# KEYS: the lists in priority order, then the stream. ARGV[1]: most messages to move, ARGV[2]: most
# bytes to move (at least one message moves), ARGV[3]: largest message carried whole,
# ARGV[4..7]: CELERY_FIELD, OVERSIZE_FIELD, OVERSIZE_LENGTH_FIELD, OVERSIZE_HEAD_BYTES.
# Returns the number of messages moved.
_PUMP: Final = """
local stream = KEYS[#KEYS]
local limit, budget, largest = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local moved, bytes = 0, 0
for i = 1, #KEYS - 1 do
  while moved < limit and bytes < budget do
    local item = redis.call('RPOP', KEYS[i])
    if not item then break end
    local size = string.len(item)
    if size > largest then
      redis.call('XADD', stream, '*', ARGV[5], string.sub(item, 1, tonumber(ARGV[7])), ARGV[6], size)
      bytes = bytes + tonumber(ARGV[7])
    else
      redis.call('XADD', stream, '*', ARGV[4], item)
      bytes = bytes + size
    end
    moved = moved + 1
  end
end
return moved
"""


def intake_lists() -> list[str]:
    """Every Redis list a Celery publisher may push intake messages to, highest priority first."""
    base = names.INTAKE_QUEUE
    return [base, *(f"{base}{PRIORITY_SEPARATOR}{step}" for step in PRIORITY_STEPS)]


class Pump:
    """Moves waiting Celery intake messages into the intake stream (the script is registered once)."""

    def __init__(self, client: redis.Redis, *, max_message_bytes: int) -> None:
        self._client = client
        self._keys = [*intake_lists(), names.NATIVE_INTAKE_STREAM]
        self._largest = max_message_bytes
        self._script = client.register_script(_PUMP)

    def move(self, *, limit: int, budget_bytes: int) -> int:
        """Move up to ``limit`` messages (and about ``budget_bytes``); returns how many moved."""
        args: list[str | int] = [limit, budget_bytes, self._largest, CELERY_FIELD, OVERSIZE_FIELD]
        args += [OVERSIZE_LENGTH_FIELD, OVERSIZE_HEAD_BYTES]
        return int(self._script(keys=self._keys, args=args))

    def waiting(self) -> int:
        """Messages waiting in the lists."""
        pipe = self._client.pipeline(transaction=False)
        for key in self._keys[:-1]:
            pipe.llen(key)
        return sum(int(n) for n in pipe.execute())
