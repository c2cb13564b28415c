"""Reading one intake stream entry, whatever bytes it holds, into the requests it carries.

An entry is either a language-neutral message (field ``message``: one request object or an array of
them) or a Celery task message moved from the intake list by :mod:`worker.pipeline.pump` (field
``celery``: kombu's JSON envelope). Nothing here trusts the publisher: sizes, nesting, encodings,
compression, content types, task names and argument shapes are all checked, and every failure is a
value (:class:`Unusable`), never an exception. What the message's requests say is judged later, one
request at a time, by the contract (so one bad request never spoils its valid siblings).

Celery headers that would delay, multiply or kill work (``eta``, ``countdown``, ``expires``, time
limits, retries) are ignored: an opt-out is taken in when it arrives.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from producer import names
from producer.errors import InvalidRequestError
from producer.masking import chunk_argsrepr
from producer.strictjson import Flaw, decode_json, decode_json_isolating
from worker.pipeline.deadletters import RAW_MESSAGE_CHARS, Reason
from worker.pipeline.pump import CELERY_FIELD, OVERSIZE_FIELD, OVERSIZE_LENGTH_FIELD

#: Deepest JSON nesting accepted in a message (a request with targets is 6 levels inside a Celery body).
MAX_JSON_DEPTH: Final = 16
#: Levels of a message from which a flaw (a duplicate key, NaN, an overlong number, a string that
#: is not UTF-8, nesting past MAX_JSON_DEPTH) refuses only the request holding it: a whole
#: language-neutral message is one request or an array of them; a Celery body is
#: ``[args, kwargs, embed]`` and each argument is a request or an array of them. A flaw above
#: (in the Celery body's own structure) refuses the message.
NATIVE_REQUEST_LEVEL: Final = 0
CELERY_REQUEST_LEVEL: Final = 2
#: The Celery task name of the deep health check; answered by the intake loop, carries no request.
PING_TASK: Final = "unsub.ping"
#: The intake trigger of earlier versions (it carried no request): acknowledged and ignored.
LEGACY_TRIGGER_TASK: Final = "unsub.intake_native"
#: Compressions a Celery publisher may use (kombu's zlib); the expansion is bounded.
ZLIB_CONTENT_TYPES: Final = frozenset({"application/x-gzip", "zlib", "gzip"})
JSON_CONTENT_TYPE: Final = "application/json"
_NATIVE: Final = names.NATIVE_INTAKE_FIELD.encode()
_CELERY: Final = CELERY_FIELD.encode()
_OVERSIZE: Final = OVERSIZE_FIELD.encode()


@dataclass(frozen=True)
class Limits:
    """What one message may hold."""

    max_bytes: int
    max_requests: int


@dataclass(frozen=True)
class Unusable:
    """Why a whole message cannot be used, for its dead letter."""

    reason: Reason
    problems: list[str]
    raw: str


@dataclass
class Message:
    """One stream entry, read. ``payloads`` are the request candidates, in order."""

    entry_id: str
    kind: str
    origin: str
    task_id: str | None = None
    task_name: str | None = None
    payloads: list[Any] = field(default_factory=list)
    #: Problems of single requests found while reading the message (position → problem).
    problems: dict[int, str] = field(default_factory=dict)
    unusable: Unusable | None = None
    #: ``ping`` or ``legacy``: a Celery control message with no requests.
    control: str | None = None

    @property
    def argsrepr(self) -> str:
        """What Flower shows: request ids and masked addresses only."""
        return chunk_argsrepr([p if isinstance(p, dict) else {} for p in self.payloads])


def read_entry(entry_id: str, fields: Mapping[bytes, bytes], limits: Limits) -> Message:
    """Turn one entry's raw fields into a :class:`Message` (never raises for what the bytes hold)."""
    if _CELERY in fields:
        return _celery(entry_id, fields[_CELERY], limits)
    if _NATIVE in fields:
        return _native(entry_id, fields[_NATIVE], limits)
    if _OVERSIZE in fields:
        size = _text(fields.get(OVERSIZE_LENGTH_FIELD.encode(), b"?"))
        problem = f"message: {size} bytes, more than the {limits.max_bytes} a message may hold"
        return _refused(entry_id, "celery", Reason.MESSAGE_TOO_LARGE, problem, fields[_OVERSIZE])
    listed = ", ".join(sorted(_text(k)[:40] for k in fields)[:10]) or "none"
    problem = f"message: the stream entry has no {names.NATIVE_INTAKE_FIELD!r} field (fields: {listed})"
    return _refused(entry_id, "json", Reason.INVALID_MESSAGE, problem, _fields_text(fields))


def poison(entry_id: str, fields: Mapping[bytes, bytes], deliveries: int) -> Message:
    """A message taken up this many times without an outcome: it kills whoever reads it."""
    problem = f"message: taken up {deliveries} times without an outcome (it stops the process reading it)"
    return _refused(entry_id, "json", Reason.POISON_MESSAGE, problem, _fields_text(fields))


# -- the language-neutral door ------------------------------------------------------------------


def _native(entry_id: str, raw: bytes, limits: Limits) -> Message:
    message = Message(entry_id, "json", f"stream:{entry_id}")
    if len(raw) > limits.max_bytes:
        problem = f"message: {len(raw)} bytes, more than the {limits.max_bytes} a message may hold"
        return _refused(entry_id, "json", Reason.MESSAGE_TOO_LARGE, problem, raw)
    try:
        decoded, flaws = decode_json_isolating(
            raw, isolate_from=NATIVE_REQUEST_LEVEL, max_depth=MAX_JSON_DEPTH, max_bytes=limits.max_bytes
        )
    except InvalidRequestError as exc:
        return _refused(entry_id, "json", Reason.INVALID_MESSAGE, exc.problems, raw)
    message.payloads = decoded if isinstance(decoded, list) else [decoded]
    if flaws:
        _note_flaws(message)
    return _counted(message, limits, raw)


# -- the Celery door ----------------------------------------------------------------------------


def _celery(entry_id: str, raw: bytes, limits: Limits) -> Message:
    try:
        envelope = decode_json(raw, max_depth=MAX_JSON_DEPTH, max_bytes=limits.max_bytes)
    except InvalidRequestError as exc:
        return _refused(entry_id, "celery", Reason.INVALID_MESSAGE, exc.problems, raw)
    headers = mapping(envelope.get("headers")) if isinstance(envelope, dict) else {}
    # Protocol 2 names the task in the headers: a body that cannot be read is still that task's.
    message = _celery_message(entry_id, str_or_none(headers.get("task")), str_or_none(headers.get("id")))
    try:
        body = _body(envelope, limits)
        decoded, flaws = decode_json_isolating(
            body, isolate_from=CELERY_REQUEST_LEVEL, max_depth=MAX_JSON_DEPTH, max_bytes=limits.max_bytes
        )
    except InvalidRequestError as exc:
        message.unusable = Unusable(Reason.INVALID_MESSAGE, exc.problems, _raw(raw))
        return message
    task_name, task_id, args, kwargs = _call(headers, decoded)
    message = _celery_message(entry_id, task_name, task_id)
    if task_name == PING_TASK:
        message.control = "ping"
        return message
    if task_name == LEGACY_TRIGGER_TASK:
        message.control = "legacy"
        return message
    shown = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
    if task_name != names.INTAKE_TASK:
        problem = f"message: task {cut(task_name)!r} is not {names.INTAKE_TASK!r}"
        return _refused_celery(message, Reason.UNKNOWN_TASK, problem, shown)
    if args is None:
        problem = "message: no task arguments (expected [args, kwargs, embed] or protocol 1's args/kwargs)"
        return _refused_celery(message, Reason.INVALID_MESSAGE, problem, shown)
    # The task takes one argument (a request or a list of them). Extra positional or keyword
    # arguments are read the same way rather than lost: each request is judged on its own.
    for value in [*args, *kwargs.values()]:
        message.payloads.extend(value if isinstance(value, list) else [value])
    if flaws:
        _note_flaws(message)
    return _counted(message, limits, shown)


def _celery_message(entry_id: str, task_name: str | None, task_id: str | None) -> Message:
    origin = f"task:{task_id}" if task_id else f"stream:{entry_id}"
    return Message(entry_id, "celery", origin, task_id=task_id, task_name=task_name)


def _body(envelope: Any, limits: Limits) -> bytes:
    """The task body's bytes, decoded from base64 and decompressed as the envelope says."""
    if not isinstance(envelope, dict) or not isinstance(envelope.get("body"), str):
        raise InvalidRequestError(["message: not a Celery task message (no envelope with a text body)"])
    properties = mapping(envelope.get("properties"))
    headers = mapping(envelope.get("headers"))
    content_type = str(envelope.get("content-type") or "").split(";")[0].strip().lower()
    if content_type != JSON_CONTENT_TYPE:
        raise InvalidRequestError(
            [f"message: content type {cut(content_type)!r} is not accepted (JSON only)"]
        )
    body: bytes = envelope["body"].encode("utf-8")
    if properties.get("body_encoding") == "base64":
        try:
            body = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequestError(["message: body is not valid base64"]) from None
    compression = headers.get("compression")
    if compression is not None:
        body = _decompress(body, str(compression), limits.max_bytes)
    return body


def _decompress(body: bytes, compression: str, max_bytes: int) -> bytes:
    if compression.lower() not in ZLIB_CONTENT_TYPES:
        raise InvalidRequestError([f"message: compression {cut(compression)!r} is not accepted"])
    inflater = zlib.decompressobj(wbits=zlib.MAX_WBITS | 32)  # zlib or gzip header
    try:
        out = inflater.decompress(body, max_bytes + 1)
    except zlib.error:
        raise InvalidRequestError(["message: compressed body is corrupt"]) from None
    if len(out) > max_bytes or inflater.unconsumed_tail:
        raise InvalidRequestError([f"message: expands to more than {max_bytes} bytes"])
    return out


def _call(
    headers: dict[str, Any], decoded: Any
) -> tuple[str | None, str | None, list[Any] | None, dict[str, Any]]:
    """Task name, id, args and kwargs from protocol 2 (headers + [args, kwargs, embed]) or 1."""
    args: list[Any] | None = None
    kwargs: dict[str, Any] = {}
    if "task" in headers:  # protocol 2
        name, task_id = headers.get("task"), headers.get("id")
        if isinstance(decoded, list) and 1 <= len(decoded) <= 3:
            args = decoded[0] if isinstance(decoded[0], list) else None
            kwargs = mapping(decoded[1]) if len(decoded) > 1 else {}
    elif isinstance(decoded, dict):  # protocol 1: everything in the body
        name, task_id = decoded.get("task"), decoded.get("id")
        args = decoded.get("args") if isinstance(decoded.get("args"), list) else None
        kwargs = mapping(decoded.get("kwargs"))
    else:
        return None, None, None, {}
    return str_or_none(name), str_or_none(task_id), args, kwargs


# -- helpers ------------------------------------------------------------------------------------


def _counted(message: Message, limits: Limits, raw: bytes | str) -> Message:
    """Refuse a message with no request (nothing would record it: it would vanish) or too many."""
    if not message.payloads:
        message.unusable = Unusable(Reason.INVALID_MESSAGE, ["message: holds no request"], _raw(raw))
    elif len(message.payloads) > limits.max_requests:
        problem = (
            f"message: holds {len(message.payloads)} requests, more than the {limits.max_requests} "
            "a message may hold: split it"
        )
        message.unusable = Unusable(Reason.MESSAGE_TOO_LARGE, [problem], _raw(raw))
        message.payloads = []
    return message


def _note_flaws(message: Message) -> None:
    """Each request holding a flaw gets that flaw as its problem (its siblings are not touched)."""
    for index, payload in enumerate(message.payloads):
        flaw = _first_flaw(payload)
        if flaw is not None:
            message.problems[index] = f"message: {flaw.problem}"


def _first_flaw(value: Any) -> Flaw | None:
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, Flaw):
            return item
        if isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return None


def _refused(
    entry_id: str, kind: str, reason: Reason, problems: str | list[str], raw: bytes | str
) -> Message:
    listed = [problems] if isinstance(problems, str) else problems
    return Message(entry_id, kind, f"stream:{entry_id}", unusable=Unusable(reason, listed, _raw(raw)))


def _refused_celery(message: Message, reason: Reason, problem: str, raw: str) -> Message:
    message.unusable = Unusable(reason, [problem], _raw(raw))
    return message


def _raw(raw: bytes | str) -> str:
    """The message as received, cut, bytes that are not UTF-8 shown as escapes."""
    head = raw[: RAW_MESSAGE_CHARS * 4]
    text = head.decode("utf-8", "backslashreplace") if isinstance(head, bytes) else head
    return text[:RAW_MESSAGE_CHARS]


def _fields_text(fields: Mapping[bytes, bytes]) -> str:
    return _raw(b" ".join(k[:64] + b"=" + v[:RAW_MESSAGE_CHARS] for k, v in list(fields.items())[:10]))


def _text(value: bytes) -> str:
    return value.decode("utf-8", "backslashreplace")


def cut(value: object, limit: int = 80) -> str:
    """``value`` as text (``repr`` unless it is text), cut to ``limit`` characters."""
    text = value if isinstance(value, str) else repr(value)
    return text[:limit]


def mapping(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one (a header or property of any shape)."""
    return value if isinstance(value, dict) else {}


def str_or_none(value: Any) -> str | None:
    """``value`` if it is non-empty text (cut to 200 characters), else None."""
    return value[:200] if isinstance(value, str) and value else None


def unreadable(entry_id: str, fields: Mapping[bytes, bytes], exc: Exception) -> Message:
    """An entry the reader itself failed on (a bug): dead-lettered rather than retried for ever."""
    problem = f"message: could not be read ({type(exc).__name__})"
    return _refused(entry_id, "json", Reason.INVALID_MESSAGE, problem, _fields_text(fields))
