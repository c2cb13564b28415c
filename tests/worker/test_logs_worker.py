"""A real worker's log: Celery's own lines mask addresses in every quoting and escaping too.

A message for a task the worker does not know makes Celery log the whole message body at ERROR
(``Received unregistered task ... The full contents of the message body was: ...``): text the
project never formatted, written by Celery's consumer, through the handler the worker installs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from celery import Celery

from producer.names import CONTROL_QUEUE
from tests.support.waiting import wait_for
from tests.worker.logging_support import decoded
from unsub_dev.localstack.processes import ManagedProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

#: The same kind of address written as a hostile publisher or a library might; each local part is
#: unique, so that finding any of it after the first letter in the log is a leak.
ADDRESSES = {
    "xavier.one": "xavier.one@example.com",
    "xavier.two": "'xavier.two@example.com'",
    "jörmun.three": "jörmun.three@exämple.com",
    "xavier.four": "email%5Exavier.four%40example.com",
    "xavier.five": "xavier.five%2540example.com",
    "xavier.six": "xavier.six\\u0040example.com",
    "xavier.seven": "xavier.seven&#64;example.com",
    "xavier.eight": "xavier.eight\uff20example.com",
    "xavier.nine": "mailto:xavier.nine@xn--exmple-cua.com",
    "xavier.ten": "<xavier.ten@example.com>",
}


def test_celerys_line_for_an_unknown_task_shows_no_address_in_any_form(
    write_config: Callable[..., Path],
    start_worker: Callable[..., ManagedProcess],
    redis_url: str,
) -> None:
    worker = start_worker(write_config())
    client = Celery("hostile-publisher", broker=redis_url)

    client.send_task(
        "unsub.no_such_task", args=[[{"email": e} for e in ADDRESSES.values()]], queue=CONTROL_QUEUE
    )
    wait_for(
        lambda: "unregistered task" in worker.log_path.read_text(errors="replace"),
        timeout_s=60,
        message=lambda: f"Celery's unregistered-task line:\n{worker.log_tail()}",
    )

    log = worker.log_path.read_text(errors="replace")
    readable = decoded(log)
    leaks = [local for local in ADDRESSES if decoded(local[1:]) in readable]
    assert not leaks, f"{leaks} in:\n{worker.log_tail()}"
    assert "x***@example.com" in readable
    assert worker.running
