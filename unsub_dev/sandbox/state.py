"""What every provider fake shares: the clock, one lock, fault settings and per-provider ledgers.

Everything lives in memory. Handlers run on the server's event loop and hold ``Core.lock`` only
while they read or change state (never while they wait), so many concurrent clients stay fast.
"""

from __future__ import annotations

import re
import threading
from collections import Counter, defaultdict
from typing import Any

from unsub_dev.sandbox.clock import Clock
from unsub_dev.sandbox.config import SandboxConfig
from unsub_dev.sandbox.faults import ProviderFaults

#: Operation name under which token endpoint calls are counted.
TOKEN_OPERATION = "token"


class Ledger:
    """Requests, rejections and unsubscribe events of one provider."""

    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        self.rejected: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.events: list[dict[str, Any]] = []
        #: Every request in arrival order: operation, arrival time (sandbox clock), status, Retry-After.
        self.calls: list[tuple[str, float, int, str | None]] = []

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": dict(self.requests),
            "rejected": {op: dict(by_status) for op, by_status in self.rejected.items()},
            "rejected_total": sum(sum(c.values()) for c in self.rejected.values()),
            "token_requests": self.requests.get(TOKEN_OPERATION, 0),
            "unsubscribes": list(self.events),
        }

    def call_log(self, operation: str | None = None) -> list[dict[str, Any]]:
        return [
            {"operation": op, "at": at, "status": code, "retry_after": retry_after}
            for op, at, code, retry_after in self.calls
            if operation is None or op == operation
        ]


class Core:
    """The sandbox-wide pieces every provider holds a reference to."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.clock = Clock()
        self.lock = threading.Lock()
        self.faults: dict[str, ProviderFaults] = {}
        self._auto: re.Pattern[str] | None = None
        self.set_auto_contacts(config.auto_contacts)

    def set_auto_contacts(self, value: bool | str) -> None:
        if value is True:
            self._auto = re.compile(r"@")
        elif isinstance(value, str) and value:
            self._auto = re.compile(value, re.IGNORECASE)
        else:
            self._auto = None

    @property
    def auto_contacts(self) -> str | None:
        return self._auto.pattern if self._auto is not None else None

    def auto_creates(self, email: str) -> bool:
        """True when a lookup of this unknown address creates the contact (``auto_contacts``)."""
        return self._auto is not None and "@" in email and self._auto.search(email) is not None


def is_email(value: object) -> bool:
    """A plausible address: one ``@``, something before it, a dot after it, no spaces."""
    if not isinstance(value, str) or len(value) > 254 or any(c.isspace() for c in value):
        return False
    local, at, domain = value.partition("@")
    return bool(local) and bool(at) and "." in domain.strip(".") and "@" not in domain


def norm(email: str) -> str:
    return email.strip().lower()
