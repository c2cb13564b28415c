"""Intake messages built by hand, as a publisher that does not use our producer library writes them.

:func:`celery_envelope` writes the JSON envelope kombu's Redis transport pushes onto a list (the
``body`` base64-encoded, headers and properties as Celery's protocol 2 sets them), from body bytes
that may be anything: deep nesting, invalid JSON, not UTF-8. :func:`task_body` and :func:`nested`
write the bodies.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

from producer import names

#: Celery protocol 2's third body element (no callbacks, no chain, no chord).
EMBED: dict[str, Any] = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def task_headers(task_id: str, task: str = names.INTAKE_TASK, **extra: Any) -> dict[str, Any]:
    """Celery protocol 2 headers of a task message (``extra`` adds or overrides, e.g. ``eta=...``)."""
    return {
        "lang": "py",
        "task": task,
        "id": task_id,
        "root_id": task_id,
        "parent_id": None,
        "group": None,
        "retries": 0,
        "eta": None,
        "expires": None,
        "timelimit": [None, None],
        "argsrepr": "...",
        "kwargsrepr": "{}",
        **extra,
    }


def task_body(args: list[Any], kwargs: dict[str, Any] | None = None) -> bytes:
    """A protocol 2 body: ``[args, kwargs, embed]``."""
    return json.dumps([args, kwargs or {}, EMBED]).encode()


def nested(depth: int, core: str = '"core"') -> str:
    """JSON text nesting ``core`` in ``depth`` arrays (no recursion, any depth)."""
    return "[" * depth + core + "]" * depth


def celery_envelope(
    body: bytes,
    *,
    headers: dict[str, Any] | None = None,
    task_id: str | None = None,
    content_type: str = "application/json",
    body_text: str | None = None,
) -> bytes:
    """The bytes kombu's Redis transport LPUSHes for one message. ``body_text`` replaces the
    base64 text of ``body`` (for bodies that are not base64 at all)."""
    task_id = task_id or str(uuid.uuid4())
    envelope = {
        "body": base64.b64encode(body).decode() if body_text is None else body_text,
        "content-encoding": "utf-8",
        "content-type": content_type,
        "headers": task_headers(task_id) if headers is None else headers,
        "properties": {
            "correlation_id": task_id,
            "reply_to": str(uuid.uuid4()),
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": names.INTAKE_QUEUE},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }
    return json.dumps(envelope).encode()
