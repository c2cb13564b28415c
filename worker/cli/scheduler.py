"""`unsub scheduler`: the pipeline's clock (run exactly one; extra ones wait as standbys)."""

from __future__ import annotations

import signal
import threading
from types import FrameType

from worker.cli._common import ConfigOption, runtime_or_exit


def scheduler(config: ConfigOption = None) -> None:
    """Promote due retries, flush buffers every flush interval, keep tokens fresh.

    Runs until SIGTERM or Ctrl-C, then gives up its leadership lease so a standby takes over at once.
    """
    rt = runtime_or_exit(config)
    from worker.logs import configure_logging
    from worker.scheduler import Scheduler

    configure_logging(rt.settings.log_level, rt.settings.log_format)
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    Scheduler(rt).run(stop)
