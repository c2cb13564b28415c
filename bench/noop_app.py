"""A plain Celery app with one task that does nothing: the yardstick of ``bench/intake.py``.

Celery's defaults (no result backend, no task events, early acknowledgement, prefetch 4), as a
team would start from. Started as a real worker process::

    NOOP_BROKER_URL=redis://... celery -A bench.noop_app worker -Q noop --concurrency 2 --pool prefork
"""

from __future__ import annotations

import os
from typing import Final

from celery import Celery

QUEUE: Final = "noop"
TASK: Final = "noop.nothing"

app = Celery("noop", broker=os.environ.get("NOOP_BROKER_URL", "redis://127.0.0.1:6379/9"))
app.conf.update(
    task_default_queue=QUEUE,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)


@app.task(name=TASK)  # type: ignore[untyped-decorator]
def nothing() -> None:
    """Does nothing: what is measured is Celery's own cost per message."""
