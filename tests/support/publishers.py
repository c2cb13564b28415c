"""Producers in processes of their own that publish until told to stop.

Each writes the request ids of every publish that returned to its own file as soon as it returned:
those requests were accepted, and the system owes each of them an outcome. Request ids are
``<publisher>-<n>`` and the address of a request is derived from its id (:func:`email_of`), so the
test rebuilds what was accepted from the files alone. A separate process per producer keeps their
CPU (validation, JSON) off the test's own threads.
"""

from __future__ import annotations

import json
import multiprocessing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import redis

from producer.client import Producer
from producer.names import NATIVE_INTAKE_FIELD, NATIVE_INTAKE_STREAM

#: Longest wait for a producer process to finish its last publish after being told to stop.
JOIN_TIMEOUT_S: Final = 60.0


@dataclass(frozen=True)
class Publisher:
    name: str
    #: ``celery``: one task message per batch (``Producer.publish_many``); ``stream``: one plain XADD
    #: of a JSON array to the language-neutral intake stream, as a service in any language would.
    door: str
    per_message: int
    pause_s: float


def email_of(request_id: str) -> str:
    return f"{request_id}@example.com"


def _batch(spec: Publisher, first: int) -> list[dict[str, str]]:
    ids = [f"{spec.name}-{n}" for n in range(first, first + spec.per_message)]
    return [{"request_id": rid, "email": email_of(rid)} for rid in ids]


def publish_until(redis_url: str, spec: Publisher, stop: Any, path: str) -> None:
    """The producer process: publish a batch, record its ids, pause; until ``stop`` is set."""
    producer = Producer(broker_url=redis_url, chunk_size=spec.per_message)
    client = redis.Redis.from_url(redis_url)
    sent = 0
    with open(path, "a", encoding="utf-8") as accepted:
        while not stop.is_set():
            batch = _batch(spec, sent)
            if spec.door == "celery":
                producer.publish_many(batch)
            else:
                client.xadd(NATIVE_INTAKE_STREAM, {NATIVE_INTAKE_FIELD: json.dumps(batch)})
            accepted.write("".join(f"{r['request_id']}\n" for r in batch))
            accepted.flush()
            sent += spec.per_message
            stop.wait(spec.pause_s)
    producer.close()
    client.close()


class Publishers:
    """Start the producers, later stop them and read back what was accepted (id -> address)."""

    def __init__(self, redis_url: str, specs: list[Publisher], workdir: Path) -> None:
        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        self._paths = [workdir / f"accepted-{spec.name}.txt" for spec in specs]
        self._procs = [
            context.Process(
                target=publish_until,
                args=(redis_url, spec, self._stop, str(path)),
                name=spec.name,
                daemon=True,
            )
            for spec, path in zip(specs, self._paths, strict=True)
        ]

    def start(self) -> Publishers:
        for proc in self._procs:
            proc.start()
        return self

    def accepted(self) -> dict[str, str]:
        ids = [rid for path in self._paths if path.exists() for rid in path.read_text().split()]
        return {rid: email_of(rid) for rid in ids}

    def stop(self) -> dict[str, str]:
        self._stop.set()
        for proc in self._procs:
            proc.join(timeout=JOIN_TIMEOUT_S)
        failed = [p.name for p in self._procs if p.exitcode != 0]
        assert not failed, f"producers failed: {failed}"
        return self.accepted()
