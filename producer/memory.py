"""An in-memory publisher for the unit tests of services that publish requests.

It validates exactly like :class:`producer.Producer` and records each task message instead of
sending it::

    fake = MemoryProducer()
    my_service.handle_click(fake, token)
    assert [r["email"] for r in fake.requests] == ["jane@example.com"]
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from producer import names
from producer.base import DEFAULT_CHUNK_SIZE, BasePublisher, TaskPayload
from producer.errors import PublishError


@dataclass(frozen=True)
class SentMessage:
    """One task message as the real producer would have sent it."""

    task_id: str
    task: str
    queue: str
    payload: TaskPayload
    argsrepr: str


class MemoryProducer(BasePublisher):
    """Records messages in ``messages``. Set ``broker_down = True`` to make sends raise ``PublishError``."""

    def __init__(self, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        super().__init__(chunk_size=chunk_size)
        self.messages: list[SentMessage] = []
        self.broker_down = False
        self.closed = False

    def _send(self, payload: TaskPayload, argsrepr: str) -> str:
        if self.broker_down:
            raise PublishError("the in-memory broker is down (MemoryProducer.broker_down)")
        task_id = str(uuid.uuid4())
        self.messages.append(SentMessage(task_id, names.INTAKE_TASK, names.INTAKE_QUEUE, payload, argsrepr))
        return task_id

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Every request sent, in order, as the intake task receives it."""
        found: list[dict[str, Any]] = []
        for message in self.messages:
            found.extend(message.payload if isinstance(message.payload, list) else [message.payload])
        return found

    def close(self) -> None:
        self.closed = True
