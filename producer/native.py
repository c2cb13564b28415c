"""The language-neutral intake from Python: XADD plain JSON (no Celery envelope) to the intake stream.

Other languages do the same with their own Redis client; see ``docs/message-contract.md``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

from producer import names
from producer.base import RequestLike, to_payload, to_request

if TYPE_CHECKING:
    import redis


def publish_json(client: redis.Redis, requests: RequestLike | Sequence[RequestLike]) -> str:
    """Validate and XADD one request (or a list, as one entry) to the native stream; returns the entry id.

    Raises:
        InvalidRequestError: a request breaks the contract (nothing was sent).
    """
    if isinstance(requests, Sequence) and not isinstance(requests, str | bytes):
        message: object = [to_payload(to_request(r, i)) for i, r in enumerate(requests)]
    else:
        message = to_payload(to_request(requests))
    entry_id = client.xadd(names.NATIVE_INTAKE_STREAM, {names.NATIVE_INTAKE_FIELD: json.dumps(message)})
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
