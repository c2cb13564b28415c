"""What becomes of a message Celery's own consumer cannot run, on every queue it consumes.

Celery consumes the control queue and the delivery queues (:func:`worker.providers.celery_queues`).
Out of the box it drops what it cannot run there: an unregistered task name, a message without a
task name, a body our bounded decoder refuses (:func:`worker.transport.bounded_loads`) or that is
not JSON, a content type it does not accept. Each is logged and acknowledged, and it is gone. Here
instead, before Celery acknowledges it:

- a message for ``unsub.intake`` (published to the wrong queue) is handed to the intake door: its
  envelope, as received, is pushed onto the intake list, and the intake loop takes it in as usual
  (it reads, judges and dead-letters every request itself, idempotently by request id);
- anything else becomes a dead letter with a true reason (``unknown_task``, ``invalid_message``),
  the envelope kept cut to ``RAW_MESSAGE_CHARS`` and masked when shown, as intake letters are, and
  counted as a refused message in the intake counters (``unsub stats``, the metrics).

A message for a task this worker does run is checked first (:func:`task_message_problem`, a few
microseconds): its body must be ``[args, kwargs, embed]``, its arguments must fit the task (Celery's
own signature check), it must have a task id and a ``timelimit`` of two numbers. Celery raised the
first and the last out of its consumer (the worker died, and the message, restored, killed every
restart); the others failed in the pool with no letter. Each is refused as an invalid task
(``invalid_message``), as is a task name that is not a string.

Then Celery does what it always did (logs, acknowledges, marks an unknown task failed in the result
backend for a caller waiting on it, sends its events and its ``task_unknown`` / ``task_rejected``
signals). The hook is a subclass of Celery's consumer (``worker_consumer``), not those signals: the
signals fire after the message is already acknowledged, and a decoding error sends none.

Crash and failure semantics: the letter (or the hand-over) is written first, in one transaction,
then the message is acknowledged. A crash in between leaves the message unacknowledged: it comes
back after the visibility timeout and is written again under the same letter id (a hand-over is
taken in again, which intake's de-duplication by request id makes harmless). If the write fails
(Redis away, a bug) one redacted line is logged and the message is left unacknowledged: kombu
gives it back after the visibility timeout, when the write is tried again. That holds one prefetch
slot of this worker until then; requeueing at once instead would spin on the same message for as
long as the failure lasts, and acknowledging would lose it. Nothing here raises into the consumer.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import redis
from celery.exceptions import InvalidTaskError
from celery.worker.consumer import Consumer
from kombu.exceptions import ContentDisallowed

from producer import names
from worker.logs import get_logger
from worker.pipeline import counters, deadletters, envelope
from worker.pipeline.counters import IntakeCounter
from worker.pipeline.intake import message_letter
from worker.reasons import DeadReason
from worker.redis_client import redis_for
from worker.settings import get_settings

log = get_logger(__name__)

#: ``worker_consumer`` value that selects :class:`SideQueueConsumer`.
CONSUMER: Final = f"{__name__}:SideQueueConsumer"
#: The problem of a task message whose body is not Celery's ``[args, kwargs, embed]``.
BODY_PROBLEM: Final = "body is not [args, kwargs, embed]"
#: Longest task name, content type or error text quoted in a letter's problem, in characters.
QUOTED_CHARS: Final = 200


@dataclass(frozen=True)
class Refusal:
    """One message Celery cannot run, and where it goes: the intake door or a dead letter."""

    queue: str
    task_name: str | None
    task_id: str | None
    #: The envelope as it was on the queue (kombu's JSON).
    envelope: str
    #: ``None``: an intake message, handed to the intake door.
    reason: DeadReason | None = None
    problem: str = ""

    @property
    def handed_over(self) -> bool:
        return self.reason is None

    @property
    def origin(self) -> str:
        """Where it came from, stable across redeliveries (so a letter overwrites its own)."""
        if self.task_id:
            return f"queue:{self.queue}:task:{self.task_id}"
        digest = hashlib.sha256(self.envelope.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        return f"queue:{self.queue}:sha256:{digest}"


# -- judging --------------------------------------------------------------------------------------


def unknown_task(message: Any) -> Refusal:
    """A message for a task this worker does not run: ``unsub.intake`` goes to the intake door."""
    refusal = _refusal(message)
    if refusal.task_name == names.INTAKE_TASK:
        return refusal
    problem = (
        f"message: task {cut(refusal.task_name)!r} is not one this worker runs (queue {refusal.queue!r})"
    )
    return _with(refusal, DeadReason.UNKNOWN_TASK, problem)


def unknown_message(message: Any) -> Refusal:
    """A message that names no task at all."""
    problem = f"message: not a Celery task message: it names no task (queue {_queue(message)!r})"
    return _with(_refusal(message), DeadReason.INVALID_MESSAGE, problem)


def invalid_task(message: Any, exc: BaseException) -> Refusal:
    """A message Celery refused to read: a content type it does not accept, or a malformed task."""
    if isinstance(exc, ContentDisallowed):
        content_type = cut(getattr(message, "content_type", None))
        problem = f"message: content type {content_type!r} is not accepted (JSON only)"
    else:
        problem = f"message: not a valid task message ({cut(str(exc))})"
    return _with(_refusal(message), DeadReason.INVALID_MESSAGE, f"{problem} (queue {_queue(message)!r})")


def decode_error(message: Any, exc: BaseException) -> Refusal:
    """A body that could not be decoded (not JSON, nested too deep, not UTF-8)."""
    problem = f"message: body could not be decoded ({cut(str(exc))}) (queue {_queue(message)!r})"
    return _with(_refusal(message), DeadReason.INVALID_MESSAGE, problem)


def _refusal(message: Any) -> Refusal:
    headers = envelope.mapping(getattr(message, "headers", None))
    return Refusal(
        queue=_queue(message),
        task_name=envelope.str_or_none(headers.get("task")),
        task_id=envelope.str_or_none(headers.get("id")),
        envelope=_envelope(message),
    )


def _with(refusal: Refusal, reason: DeadReason, problem: str) -> Refusal:
    return Refusal(refusal.queue, refusal.task_name, refusal.task_id, refusal.envelope, reason, problem)


# -- keeping ------------------------------------------------------------------------------------


def keep(client: redis.Redis, refusal: Refusal, *, now: float | None = None) -> None:
    """Hand the message to the intake door, or write its dead letter and count it, in one
    transaction. Raises what Redis raises."""
    pipe = client.pipeline(transaction=True)
    if refusal.reason is None:
        pipe.lpush(names.INTAKE_QUEUE, refusal.envelope)
    else:
        now = time.time() if now is None else now
        letter = message_letter(refusal.origin, refusal.reason, [refusal.problem], refusal.envelope, now)
        deadletters.write(pipe, letter)
        counters.incr_intake(pipe, IntakeCounter.REFUSED_MESSAGES)
    pipe.execute()


def kept(refusal: Refusal, client: redis.Redis | None = None) -> bool:
    """:func:`keep` (on the state Redis unless ``client``), never raising: False, after one
    redacted log line, when it failed."""
    try:
        keep(client if client is not None else _state_redis(), refusal)
    except Exception as exc:  # Redis away, or a bug: the message must stay, the consumer must live
        log.error(
            "could not keep a message Celery cannot run; left unacknowledged for redelivery",
            queue=refusal.queue,
            task=cut(refusal.task_name),
            reason=refusal.reason,
            error=f"{type(exc).__name__}: {cut(str(exc))}",
        )
        return False
    if refusal.handed_over:
        log.info("intake message on a Celery queue handed to the intake door", queue=refusal.queue)
    else:
        log.warning(
            "message Celery cannot run dead-lettered",
            queue=refusal.queue,
            task=cut(refusal.task_name),
            reason=refusal.reason,
        )
    return True


def _state_redis() -> redis.Redis:
    return redis_for(get_settings().state_redis_url)


# -- registered tasks: a message Celery would choke on, refused before its Request is built ------


def task_message_problem(task: Any, message: Any, body: Any) -> str | None:
    """What keeps ``message`` (for registered ``task``; ``body`` decoded already by Celery for
    protocol 1, else None) from being run, or None. Celery itself raised these out of its consumer
    (a body not ``[args, kwargs, embed]``, a ``timelimit`` not two numbers: the worker died and the
    message came back) or sent them to the pool to fail there (arguments that do not fit, a
    missing id: a FAILURE or nothing at all, no letter). Decoding the body here costs nothing
    extra: kombu keeps it for Celery."""
    payload = message.payload if body is None else body
    try:  # Celery's own test of a protocol 1 (or hybrid) body, which raised on an int
        in_body = body is not None or "args" in payload
    except TypeError:
        return BODY_PROBLEM
    if in_body:  # fields and arguments in the body
        if not isinstance(payload, dict):
            return BODY_PROBLEM
        fields, parts = payload, [payload.get("args", ()), payload.get("kwargs", {}), None]
    else:
        fields, parts = envelope.mapping(message.headers), payload
    if not (isinstance(parts, list | tuple) and len(parts) == 3):
        return BODY_PROBLEM
    return _fields_problem(fields) or _arguments_problem(task, *parts)


def _fields_problem(fields: dict[str, Any]) -> str | None:
    if not (isinstance(fields.get("id"), str) and fields["id"]):
        return "no task id"
    limits = fields.get("timelimit")
    if limits is None:
        return None
    if isinstance(limits, list | tuple) and len(limits) == 2 and all(map(_is_time_limit, limits)):
        return None
    return "'timelimit' is not two numbers of seconds"


def _is_time_limit(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value) and value >= 0


def _arguments_problem(task: Any, args: Any, kwargs: Any, embed: Any) -> str | None:
    if not (isinstance(args, list | tuple) and isinstance(kwargs, dict) and isinstance(embed, dict | None)):
        return BODY_PROBLEM
    check = getattr(task, "__header__", None)  # Celery's own check of a call's arguments
    if check is None:
        return None
    try:
        check(*args, **kwargs)
    except TypeError as exc:
        return f"arguments do not fit the task ({cut(str(exc))})"
    return None


def guarded(task: Any, strategy: Callable[..., Any]) -> Callable[..., Any]:
    """Celery's ``strategy`` for ``task``, refusing (:class:`InvalidTaskError`, which Celery's
    consumer hands to :meth:`SideQueueConsumer.on_invalid_task`) a message it would choke on."""

    def guarded_strategy(message: Any, body: Any, *args: Any, **kwargs: Any) -> Any:
        problem = task_message_problem(task, message, body)
        if problem is not None:
            raise InvalidTaskError(problem)
        return strategy(message, body, *args, **kwargs)

    return guarded_strategy


# -- the consumer -------------------------------------------------------------------------------


class SideQueueConsumer(Consumer):  # type: ignore[misc]
    """Celery's consumer, keeping what it cannot run (see the module docstring)."""

    def update_strategies(self) -> None:
        super().update_strategies()
        for name, strategy in self.strategies.items():
            self.strategies[name] = guarded(self.app.tasks[name], strategy)

    def create_task_handler(self, *args: Any, **kwargs: Any) -> Callable[[Any], None]:
        handler: Callable[[Any], None] = super().create_task_handler(*args, **kwargs)

        def on_task_received(message: Any) -> None:
            name = envelope.mapping(getattr(message, "headers", None)).get("task")
            if name is None or isinstance(name, str):
                handler(message)
            else:  # Celery looks it up in a dict: a list raised TypeError out of the consumer
                self.on_invalid_task(None, message, InvalidTaskError("header 'task' is not a string"))

        return on_task_received

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        refusal = _safely(unknown_task, message)
        if refusal is None or not kept(refusal):
            return
        if refusal.handed_over:
            _acknowledge(message)
        else:
            _then(super().on_unknown_task, message, body, message, exc)

    def on_unknown_message(self, body: Any, message: Any) -> None:
        refusal = _safely(unknown_message, message)
        if refusal is not None and kept(refusal):
            _then(super().on_unknown_message, message, body, message)

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        refusal = _safely(invalid_task, message, exc)
        if refusal is not None and kept(refusal):
            _then(super().on_invalid_task, message, body, message, exc)

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        refusal = _safely(decode_error, message, exc)
        if refusal is not None and kept(refusal):
            _then(super().on_decode_error, message, message, exc)


def _safely(judge: Any, *args: Any) -> Refusal | None:
    try:
        refusal: Refusal = judge(*args)
    except Exception as exc:  # a bug here must not stop the consumer; the message stays
        log.error("could not read a message Celery cannot run; left unacknowledged", error=type(exc).__name__)
        return None
    return refusal


def _then(celery_handler: Any, message: Any, *args: Any) -> None:
    """Celery's own handling of a message already kept (it logs and acknowledges); if it fails
    (a message with a task name but no id trips it), acknowledge here."""
    try:
        celery_handler(*args)
    except Exception as exc:
        log.warning("Celery's handler failed on a kept message", error=type(exc).__name__)
        _acknowledge(message)


def _acknowledge(message: Any) -> None:
    try:
        if not message.acknowledged:
            message.ack()
    except Exception as exc:  # kept already: a redelivery writes the same letter again
        log.warning("could not acknowledge a kept message", error=type(exc).__name__)


# -- helpers ------------------------------------------------------------------------------------


def _envelope(message: Any) -> str:
    """kombu's envelope as it was on the queue (the Redis transport keeps it as ``_raw``)."""
    raw = getattr(message, "_raw", None)
    if isinstance(raw, dict):
        try:
            return json.dumps(raw)
        except (TypeError, ValueError, RecursionError):
            pass
    body = getattr(message, "body", b"")
    return body.decode("utf-8", "backslashreplace") if isinstance(body, bytes) else str(body)


def _queue(message: Any) -> str:
    info = envelope.mapping(getattr(message, "delivery_info", None))
    return cut(info.get("routing_key") or info.get("exchange") or "?")


def cut(value: object) -> str:
    """``value`` as text, cut to :data:`QUOTED_CHARS`."""
    return envelope.cut(value, QUOTED_CHARS)
