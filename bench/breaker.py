"""Delivery after a provider outage: how soon the circuit breaker lets records through again.

    python bench/breaker.py --outage-s 240

One worker (``unsub worker --concurrency 2``) and ``unsub scheduler`` carry requests to insider
alone (a batch API, its rate limit lifted) with the **production** timings (``LocalStack(fast=False)``:
breaker ``failure_threshold`` 5, ``cooldown_s`` 5, ``max_cooldown_s`` 20; retries from 2 s; a flush
every 1 s). After an unmeasured warm-up round, the in-process sandbox's insider provider answers every
request with 502 for ``--outage-s`` seconds (its ``outage_for_s`` fault, set on the server's own
fault settings as ``POST /_sandbox/faults`` does; the window's end is a time on the sandbox clock),
and one-request messages are published at ``--rate`` requests/s for the whole outage, so records
pile up behind the open breaker. Then the benchmark waits until every one of them is delivered.

From the sandbox's request log (arrival time on the sandbox clock and status of every call) and its
unsubscribe events (time-stamped as recorded): **resumed after**, from the outage's end to the first
insider unsubscribe answered 200 after it; **all delivered after**, from the end to the event of the
last record published during the outage. The breaker's hash in Redis is read every 0.1 s: each
opening is noted with its cool-down, and an opening after the previous cool-down had run out is a
**failed probe**. ``breaker opened`` is the stats counter (``unsub stats``: every opening,
re-openings included). The sandbox clock is wall time here (nothing advances it), the same clock the
worker stamps the breaker with. Results: ``bench/results/breaker.json``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Final

import _common as common

CONNECTION: Final = "insider"
DEFAULT_OUTAGE_S: Final = 240.0
DEFAULT_RATE: Final = 2.0
OUTAGE_STATUS: Final = 502
#: How often the benchmark publishes what is due, reads the breaker and looks for deliveries.
TICK_S: Final = 0.1
#: Longest wait after the outage for every record to be delivered (and for the warm-up to settle).
DEFAULT_TIMEOUT_S: Final = 1200.0
WARM_UP_REQUESTS: Final = 10


def only_insider(data: dict[str, Any]) -> None:
    """Insider alone, no client-side rate limit; every other setting at its production default."""
    data["connections"] = [c for c in data["connections"] if c["name"] == CONNECTION]
    for conn in data["connections"]:
        conn["rate_limit"] = None


def start_outage(server: Any, outage_s: float) -> tuple[float, float]:
    """The insider provider answers 502 from now for ``outage_s``; returns the window (sandbox clock)."""
    from unsub_dev.sandbox.faults import FaultSettings

    wanted = FaultSettings(outage_for_s=outage_s, outage_status=OUTAGE_STATUS)
    sandbox = server.sandbox
    with sandbox.core.lock:
        faults = sandbox.providers[CONNECTION].faults
        faults.configure(wanted, sandbox.core.clock.now())
        return float(faults.settings.outage_start), float(faults.settings.outage_end)


def sandbox_now(server: Any) -> float:
    with server.sandbox.core.lock:
        return float(server.sandbox.core.clock.now())


class BreakerWatch:
    """Every opening of the connection's breaker seen in its Redis hash: when, and for how long."""

    def __init__(self, client: Any) -> None:
        from worker import keys

        self.client = client
        self.key = keys.breaker(CONNECTION)
        self.openings: list[dict[str, float]] = []

    def look(self) -> None:
        from worker.redis_client import text_map

        raw = text_map(self.client.hgetall(self.key))
        if raw.get("state") != "open" or "opened_at" not in raw:
            return
        opened_at = float(raw["opened_at"])
        if not self.openings or opened_at != self.openings[-1]["opened_at"]:
            self.openings.append(
                {
                    "opened_at": opened_at,
                    "cooldown_s": float(raw["cooldown_s"]),
                    "open_until": float(raw["open_until"]),
                }
            )

    def failed_probes(self) -> int:
        """Openings that came after the previous cool-down ran out: a probe went out and failed."""
        pairs = zip(self.openings, self.openings[1:], strict=False)
        return sum(1 for before, after in pairs if after["opened_at"] >= before["open_until"])


def publish_until(stack: Any, server: Any, watch: BreakerWatch, rate: float, end: float) -> list[str]:
    """One-request messages at ``rate``/s until the sandbox clock reaches ``end``; their addresses."""
    emails: list[str] = []
    started = time.monotonic()
    with stack.producer() as producer:
        while sandbox_now(server) < end:
            while len(emails) < (time.monotonic() - started) * rate:
                email = f"outage{len(emails)}@example.com"
                producer.publish({"email": email, "connections": [CONNECTION]})
                emails.append(email)
            watch.look()
            time.sleep(TICK_S)
    return emails


def delivered_at(server: Any, wanted: set[str]) -> dict[str, float]:
    """When the sandbox first recorded each wanted address unsubscribed at insider (epoch seconds)."""
    seen: dict[str, float] = {}
    with server.sandbox.core.lock:
        for event in server.sandbox.providers[CONNECTION].ledger.events:
            email = str(event.get("email"))
            if email in wanted and email not in seen and "recorded_at" in event:
                seen[email] = float(event["recorded_at"])
    return seen


def wait_delivered(server: Any, watch: BreakerWatch, emails: list[str], timeout_s: float) -> dict[str, float]:
    deadline = time.monotonic() + timeout_s
    wanted = set(emails)
    while len(seen := delivered_at(server, wanted)) < len(wanted):
        watch.look()
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{len(wanted) - len(seen)} records not delivered {timeout_s:.0f}s after the outage"
            )
        time.sleep(TICK_S)
    return seen


def unsubscribe_calls(server: Any) -> list[tuple[float, int]]:
    """(arrival on the sandbox clock, status) of every insider unsubscribe call, in arrival order."""
    from unsub_dev.sandbox.insider import UNSUBSCRIBE

    with server.sandbox.core.lock:
        calls = list(server.sandbox.providers[CONNECTION].ledger.calls)
    return [(at, status) for operation, at, status, _ in calls if operation == UNSUBSCRIBE]


def relative(opening: dict[str, float], start: float) -> dict[str, float]:
    """An opening with its times counted from the outage's start."""
    return {
        "opened_s": round(opening["opened_at"] - start, 3),
        "cooldown_s": opening["cooldown_s"],
        "probe_due_s": round(opening["open_until"] - start, 3),
    }


def run(args: argparse.Namespace, redis_url: str, server: Any, workdir: Path) -> dict[str, Any]:
    from unsub_dev.localstack.stack import LocalStack

    with LocalStack(
        workdir, redis_url=redis_url, sandbox_url=server.url, fast=False, config_hook=only_insider
    ) as stack:
        stack.start_worker("w1", concurrency=args.concurrency)
        stack.start_scheduler()
        with stack.producer() as producer:
            producer.publish_many([{"email": f"warm{i}@example.com"} for i in range(WARM_UP_REQUESTS)])
        stack.wait_settled(expected_requests=WARM_UP_REQUESTS, timeout_s=args.timeout)
        watch = BreakerWatch(stack.redis)
        start, end = start_outage(server, args.outage_s)
        emails = publish_until(stack, server, watch, args.rate, end)
        seen = wait_delivered(server, watch, emails, args.timeout)
        snap = stack.wait_settled(expected_requests=WARM_UP_REQUESTS + len(emails), timeout_s=args.timeout)
        policy = stack.settings.connection(CONNECTION).breaker.model_dump()
        flush_interval_s = stack.settings.flush_interval_s
    counters = next(c for c in snap.connections if c.name == CONNECTION).counters
    calls = unsubscribe_calls(server)
    first_ok = min(at for at, status in calls if status < 400 and at >= end)
    before_end = [o for o in watch.openings if o["opened_at"] < end]
    last = before_end[-1] if before_end else None  # None: the outage was too short to open it
    return {
        "breaker_policy": policy,
        "flush_interval_s": flush_interval_s,
        "records_during_outage": len(emails),
        "outage_calls": sum(1 for at, status in calls if status == OUTAGE_STATUS and start <= at < end),
        "openings": [relative(o, start) for o in watch.openings],
        "failed_probes": watch.failed_probes(),
        "breaker_opened": counters.get("breaker_opened", 0),
        "cooldown_at_end_s": last["cooldown_s"] if last else None,
        "probe_due_after_s": round(last["open_until"] - end, 3) if last else None,
        "resumed_after_s": round(first_ok - end, 3),
        "all_delivered_after_s": round(max(seen.values()) - end, 3),
        "delivered": counters.get("delivered", 0),  # warm-up included
        "dead_letters": snap.dead_letters_now,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--outage-s", type=float, default=DEFAULT_OUTAGE_S,
                        help="seconds the insider provider answers 502 (default 240)")  # fmt: skip
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE,
                        help="requests published per second during the outage (default 2)")  # fmt: skip
    parser.add_argument("--concurrency", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                        help="longest wait after the outage for every record (s, default 1200)")  # fmt: skip
    common.add_redis_argument(parser)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="bench-breaker-") as tmp,
        common.bench_redis(args.redis_url) as url,
    ):
        machine = common.machine_info(url)
        print(common.describe_machine(machine))
        print(
            f"insider only, production breaker and retry timings; a {args.outage_s:g} s outage (HTTP "
            f"{OUTAGE_STATUS}) while {args.rate:g} requests/s are published"
        )
        with common.bench_sandbox() as server:
            result = run(args, url, server, Path(tmp))
    load_end = [round(x, 2) for x in os.getloadavg()]
    headers = ["outage s", "resumed after s", "all delivered after s", "failed probes", "breaker opened"]
    row = [f"{args.outage_s:g}", f"{result['resumed_after_s']:.1f}", f"{result['all_delivered_after_s']:.1f}",
           result["failed_probes"], result["breaker_opened"]]  # fmt: skip
    common.print_table(headers, [row])
    cooldowns = ", ".join(f"{o['cooldown_s']:g}" for o in result["openings"])
    due = result["probe_due_after_s"]
    print(
        f"cool-downs {cooldowns or 'none (never opened)'} s; next probe due "
        f"{'-' if due is None else f'{due:.1f} s'} after the end; "
        f"{result['records_during_outage']} records published during the outage, "
        f"{result['outage_calls']} calls answered {OUTAGE_STATUS}; dead letters {result['dead_letters']}"
    )
    print(f"load average at end: {' '.join(map(str, load_end))}")
    report = {"machine": machine, "load_avg_at_end": load_end, "outage_s": args.outage_s, "rate": args.rate}
    common.write_json("breaker", {**report, **result})


if __name__ == "__main__":
    main()
