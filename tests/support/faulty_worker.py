"""`unsub worker` with a fault in its consumer: ``python -m tests.support.faulty_worker worker ...``.

The first read of the broker channel raises :class:`RuntimeError` out of Celery's consumer, as a bug
in the consumer would (later reads, such as the one kombu makes while closing, read as usual):
Celery logs "Unrecoverable error" and stops the worker. No message content reaches that path any
more (``worker.transport`` keeps what it cannot read), so the test of the worker's exit code injects
the fault here instead of shipping a hook in the production code.
"""

from __future__ import annotations

import sys
from typing import Any

from worker import transport
from worker.cli import main

#: The injected error's text, looked for in the worker's log.
FAULT: str = "injected consumer fault"


_real_read = transport.read_item
_faulted: list[bool] = []


def _fault_once(channel: Any, **options: Any) -> bool:
    if _faulted:
        return _real_read(channel, **options)
    _faulted.append(True)
    raise RuntimeError(FAULT)


if __name__ == "__main__":
    transport.read_item = _fault_once
    sys.argv = ["unsub", *sys.argv[1:]]
    main()
