"""The sandbox's clock: wall time plus an offset tests can advance (``POST /_sandbox/clock``)."""

from __future__ import annotations

import time
from datetime import UTC, datetime


class Clock:
    def __init__(self) -> None:
        self.offset_s = 0.0

    def now(self) -> float:
        return time.time() + self.offset_s

    def advance(self, seconds: float) -> float:
        self.offset_s += seconds
        return self.now()

    def iso(self, *, millis: bool = False) -> str:
        """Now in ISO-8601 UTC (``2026-06-27T10:00:00Z``)."""
        moment = datetime.fromtimestamp(self.now(), UTC)
        spec = "milliseconds" if millis else "seconds"
        return moment.isoformat(timespec=spec).replace("+00:00", "Z")
