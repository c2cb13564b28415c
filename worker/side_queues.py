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
import time
from dataclasses import dataclass
from typing import Any, Final

import redis
from celery.worker.consumer import Consumer
from kombu.exceptions import ContentDisallowed

from producer import names
from worker.logs import get_logger
from worker.pipeline import counters, deadletters
from worker.pipeline.counters import IntakeCounter
from worker.pipeline.intake import message_letter
from worker.reasons import DeadReason
from worker.redis_client import redis_for
from worker.settings import get_settings

log = get_logger(__name__)

#: ``worker_consumer`` value that selects :class:`SideQueueConsumer`.
CONSUMER: Final = f"{__name__}:SideQueueConsumer"
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
    headers = _mapping(getattr(message, "headers", None))
    return Refusal(
        queue=_queue(message),
        task_name=_text_or_none(headers.get("task")),
        task_id=_text_or_none(headers.get("id")),
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


# -- the consumer -------------------------------------------------------------------------------


class SideQueueConsumer(Consumer):  # type: ignore[misc]
    """Celery's consumer, keeping what it cannot run (see the module docstring)."""

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
    info = _mapping(getattr(message, "delivery_info", None))
    return cut(info.get("routing_key") or info.get("exchange") or "?")


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text_or_none(value: Any) -> str | None:
    return value[:QUOTED_CHARS] if isinstance(value, str) and value else None


def cut(value: object) -> str:
    """``value`` as text, cut to :data:`QUOTED_CHARS`."""
    text = value if isinstance(value, str) else repr(value)
    return text[:QUOTED_CHARS]
