"""A Celery task message as it lies in a Redis list: kombu's JSON envelope around protocol 2.

The producer writes intake messages itself (so that it can ask Redis to confirm replication on the
same connection, see :mod:`producer.client`); what it writes is exactly what a Celery client writes
for ``send_task(name, args=[payload], queue=...)``, so the workers' intake loop, a Celery worker and
Flower read it the same way::

    {"body": base64(JSON [args, kwargs, embed]), "content-type": "application/json",
     "content-encoding": "utf-8", "headers": {"task": ..., "id": ..., "argsrepr": ..., ...},
     "properties": {"body_encoding": "base64", "delivery_info": {"exchange": "", "routing_key": queue},
                    "delivery_tag": ..., "correlation_id": id, "delivery_mode": 2, "priority": 0}}
"""

from __future__ import annotations

import base64
import json
import os
import socket
import uuid
from typing import Any, Final

#: What a Celery client puts in ``embed`` when there is no callback, chain or chord.
_EMBED: Final = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
#: Celery's persistent delivery mode.
PERSISTENT: Final = 2


def origin() -> str:
    """Celery's ``origin`` header: who published (``gen<pid>@<host>``)."""
    return f"gen{os.getpid()}@{socket.gethostname()}"


def task_message(
    task: str,
    args: list[Any],
    *,
    task_id: str,
    queue: str,
    argsrepr: str,
    kwargsrepr: str = "{}",
    sender: str | None = None,
) -> str:
    """The JSON text a Celery client LPUSHes onto ``queue`` for this task call."""
    body = json.dumps([args, {}, _EMBED], separators=(",", ":")).encode("utf-8")
    headers: dict[str, Any] = {
        "lang": "py",
        "task": task,
        "id": task_id,
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, None],
        "root_id": task_id,
        "parent_id": None,
        "argsrepr": argsrepr,
        "kwargsrepr": kwargsrepr,
        "origin": sender or origin(),
        "ignore_result": False,
        "replaced_task_nesting": 0,
        "stamped_headers": None,
        "stamps": {},
    }
    properties = {
        "correlation_id": task_id,
        "delivery_mode": PERSISTENT,
        "delivery_info": {"exchange": "", "routing_key": queue},
        "priority": 0,
        "body_encoding": "base64",
        "delivery_tag": str(uuid.uuid4()),
    }
    envelope = {
        "body": base64.b64encode(body).decode("ascii"),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": properties,
    }
    return json.dumps(envelope, separators=(",", ":"))
