"""Intake messages built by hand, as a publisher that does not use our producer library writes them.

:func:`celery_envelope` writes the JSON envelope kombu's Redis transport pushes onto a list (the
``body`` base64-encoded, headers and properties as Celery's protocol 2 sets them), from body bytes
that may be anything: deep nesting, invalid JSON, not UTF-8. :func:`task_body` and :func:`nested`
write the bodies. :class:`HostilePublisher` sends them (kombu's Producer, raw LPUSH and XADD) and
keeps, in :class:`Traffic`, what each one must become.
"""

from __future__ import annotations

import base64
import itertools
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import redis
from kombu import Connection

from producer import names
from producer.contract import canonical_email
from worker.pipeline import deadletters

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
    routing_key: str = names.INTAKE_QUEUE,
) -> bytes:
    """The bytes kombu's Redis transport LPUSHes for one message onto the list ``routing_key``.
    ``body_text`` replaces the base64 text of ``body`` (for bodies that are not base64 at all)."""
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
            "delivery_info": {"exchange": "", "routing_key": routing_key},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }
    return json.dumps(envelope).encode()


# -- publishing by hand, and what each message must become ---------------------------------------


@dataclass(frozen=True)
class Good:
    """A valid request: delivered to exactly these targets per connection, once each."""

    email: str
    targets: dict[str, frozenset[str]]


@dataclass(frozen=True)
class Expected:
    """A dead letter that must exist: its reason and the start of its first problem. ``letter_id``
    is None for a message refused before its task id could be read: its id follows from a stream
    entry id no publisher learns, so it is found by reason, problem and ``marker`` (text in its raw)."""

    reason: str
    problem: str
    letter_id: str | None = None
    marker: str | None = None
    #: A whole message (counted in ``refused_messages``), or one request (``invalid``).
    whole: bool = True


@dataclass
class Traffic:
    """Everything published, and what each piece must become."""

    good: dict[str, Good] = field(default_factory=dict)
    letters: list[Expected] = field(default_factory=list)
    #: Request ids inside refused messages: they must have no status and reach no provider.
    never_taken: set[str] = field(default_factory=set)
    #: Accepted requests that name only connections nobody configured (one letter each).
    unknown: set[str] = field(default_factory=set)

    def whole(self, origin: str, reason: str, problem: str) -> None:
        self.letters.append(Expected(reason, problem, deadletters.message_letter_id(origin)))

    def item(self, origin: str, index: int, reason: str, problem: str) -> None:
        letter_id = deadletters.message_letter_id(f"{origin}:{index}")
        self.letters.append(Expected(reason, problem, letter_id, whole=False))

    def unseen(self, reason: str, problem: str, marker: str | None = None) -> None:
        self.letters.append(Expected(reason, problem, marker=marker))


class HostilePublisher:
    """Publishes as a publisher in another codebase would: kombu's own Producer, and raw Redis
    commands with whatever bytes (never through the producer library)."""

    def __init__(self, redis_url: str) -> None:
        self.connection = Connection(redis_url)
        self.producer = self.connection.Producer()
        self.raw = redis.Redis.from_url(redis_url)  # bytes in, bytes out
        self.traffic = Traffic()
        self._serial = itertools.count()

    def close(self) -> None:
        self.connection.release()
        self.raw.close()

    def publish(self, body: Any, *, headers: dict[str, Any] | None = None, **options: Any) -> str:
        """One message through kombu (``serializer``, ``content_type``, ``compression``,
        ``priority``, ...); a str or bytes ``body`` with a ``content_type`` goes as it is."""
        task_id = str(uuid.uuid4())
        self.producer.publish(
            body,
            exchange="",
            routing_key=names.INTAKE_QUEUE,
            headers=task_headers(task_id) if headers is None else {**headers, "id": task_id},
            retry=False,
            **options,
        )
        return task_id

    def publish_text(self, text: str | bytes, **options: Any) -> str:
        encoding = "utf-8" if isinstance(text, str) else "binary"
        return self.publish(text, content_type="application/json", content_encoding=encoding, **options)

    def lpush(self, raw: bytes, queue: str = names.INTAKE_QUEUE) -> None:
        self.raw.lpush(queue, raw)

    def xadd(self, message: bytes | str, field_name: bytes = names.NATIVE_INTAKE_FIELD.encode()) -> str:
        entry_id = self.raw.xadd(names.NATIVE_INTAKE_STREAM, {field_name: message})
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    def good(self, expect: dict[str, set[str]] | None = None, **fields: Any) -> dict[str, Any]:
        """A valid request, registered with the targets it must reach per connection (``expect``;
        by default global at whatcounts and insider, the connections it names by default)."""
        n = next(self._serial)
        request = {"request_id": f"good-{n}", "email": f"good.person{n}@example.com", **fields}
        request.setdefault("connections", ["whatcounts", "insider"])
        wanted = expect or {c: {"global"} for c in request["connections"]}
        targets = {c: frozenset(t) for c, t in wanted.items()}
        self.traffic.good[request["request_id"]] = Good(canonical_email(request["email"]), targets)
        return request

    def never(self, **fields: Any) -> dict[str, Any]:
        """A valid request inside a message that must be refused whole."""
        n = next(self._serial)
        request = {"request_id": f"never-{n}", "email": f"never.person{n}@example.com", **fields}
        self.traffic.never_taken.add(request["request_id"])
        return request
