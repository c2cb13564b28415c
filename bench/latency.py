"""Publish-to-provider latency at a steady offered load.

    python bench/latency.py --rate 100 --duration 30

Requests are published one at a time (``Producer.publish``, one task message each, as a live
service would) at ``--rate`` requests/s for ``--duration`` s, each to ``--connections`` (default:
all six of the sandbox config), while one worker pod's worth of processes (``unsub worker
--concurrency 2`` and ``unsub scheduler``) carries them to an in-process sandbox. The latency of
a record is the time from just before its request was published to the moment the sandbox
recorded the unsubscribe event for that address at that provider (the benchmark stamps each event
with a float time as the sandbox appends it). No faults; rate limits lifted. The scheduler's flush
interval is the local stack's fast one (0.25 s; production default 1 s), which bounds how long a
record waits for a batch to fill. Results: ``bench/results/latency.json``.

``--mixed`` measures head-of-line blocking instead: one ``unsub worker`` with the **default**
settings (flush every 1 s, 2 processes, drain budget 10 s) while ``--backlog`` requests for
``--backlog-connection`` (default cc-contacts, at its default rate limit of 4 calls/s, two calls a
record) drain slowly, and one-request messages arrive at ``--rate`` requests/s (default 125) for
the other connections (default cc-partner, whatcounts, whatcounts-ck, insider: 500 records/s).
It reports publish-to-provider percentiles per connection for the steady traffic, the **intake
delay** (publish until the request's status says it was taken in) and how far the backlog got.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Final

import _common as common
from throughput import CONNECTIONS, lift_rate_limits

#: Sandbox provider (and WhatCounts realm) → connection of the sandbox config.
REALMS: Final = {"sandbox-realm": "whatcounts", "ck-realm": "whatcounts-ck"}
#: --mixed: the slow connection with a backlog, and the connections of the steady traffic.
BACKLOG_CONNECTION: Final = "cc-contacts"
MIXED_CONNECTIONS: Final = ("cc-partner", "whatcounts", "whatcounts-ck", "insider")
#: Requests/s offered: the plain run, and --mixed (125 x four connections = 500 records/s).
DEFAULT_RATE: Final = 100.0
MIXED_RATE: Final = 125.0


def connection_of(provider: str, event: dict[str, Any]) -> str:
    if provider == "whatcounts":
        return REALMS.get(str(event.get("realm")), "whatcounts")
    return provider.replace("_", "-")


def provider_times(server: Any) -> dict[tuple[str, str], float]:
    """When the sandbox recorded each (connection, address) unsubscribe first (epoch seconds)."""
    seen: dict[tuple[str, str], float] = {}
    with server.sandbox.core.lock:
        for provider_name, provider in server.sandbox.providers.items():
            for event in provider.ledger.events:
                key = (connection_of(provider_name, event), str(event.get("email")))
                if "recorded_at" in event and key not in seen:
                    seen[key] = float(event["recorded_at"])
    return seen


def publish_steadily(
    producer: Any, rate: float, duration: float, connections: list[str], prefix: str
) -> tuple[dict[str, float], dict[str, str], float, int]:
    """One message per request at ``rate``/s: publish times and request ids by address."""
    total = int(rate * duration)
    published: dict[str, float] = {}
    ids: dict[str, str] = {}
    late = 0
    start = time.monotonic()
    for i in range(total):
        wait = start + i / rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        elif wait < -0.1:
            late += 1
        email = f"{prefix}{i}@example.com"
        published[email] = time.time()
        ids[email] = producer.publish(
            {"email": email, "customer_key": f"ck-{i}", "connections": connections, "scope": "list"}
        )
    return published, ids, time.monotonic() - start, late


def latencies(
    published: dict[str, float], seen: dict[tuple[str, str], float], connections: list[str]
) -> tuple[dict[str, list[float]], int]:
    by_conn: dict[str, list[float]] = {name: [] for name in connections}
    missing = 0
    for email, t0 in published.items():
        for name in connections:
            t1 = seen.get((name, email))
            if t1 is None:
                missing += 1
            else:
                by_conn[name].append(t1 - t0)
    return {k: sorted(v) for k, v in by_conn.items()}, missing


def run(args: argparse.Namespace, redis_url: str, server: Any, workdir: Path) -> dict[str, Any]:
    from unsub_dev.localstack.stack import LocalStack

    connections = list(args.connections)
    total = int(args.rate * args.duration)
    with LocalStack(
        workdir, redis_url=redis_url, sandbox_url=server.url, config_hook=lift_rate_limits
    ) as stack:
        stack.start_worker("w1", concurrency=args.concurrency)
        stack.start_scheduler()
        with stack.producer() as producer:
            published, _, offered_s, late = publish_steadily(
                producer, args.rate, args.duration, connections, "lat"
            )
        snap = stack.wait_settled(expected_requests=total, timeout_s=args.timeout)
    by_conn, missing = latencies(published, provider_times(server), connections)
    every = sorted(x for values in by_conn.values() for x in values)
    return {
        "requests": total,
        "offered_rate": args.rate,
        "achieved_publish_rate": round(total / offered_s, 1),
        "published_late_by_100ms": late,
        "records_seen_at_provider": len(every),
        "records_missing": missing,
        "dead_letters_by_reason": snap.dead_letters_total_by_reason,
        "all": _summary(every),
        "connections": {name: _summary(sorted(values)) for name, values in by_conn.items()},
    }


def run_mixed(args: argparse.Namespace, redis_url: str, server: Any, workdir: Path) -> dict[str, Any]:
    """Steady one-request messages while a rate-limited connection drains a backlog (default settings)."""
    from unsub_dev.localstack.stack import LocalStack
    from worker.pipeline import status

    slow = args.backlog_connection
    steady = [c for c in args.connections if c != slow]

    def configure(data: dict[str, Any]) -> None:
        for conn in data["connections"]:  # the slow connection keeps its own default rate limit
            if conn["name"] != slow:
                conn["rate_limit"] = None

    with LocalStack(
        workdir, redis_url=redis_url, sandbox_url=server.url, fast=False, config_hook=configure
    ) as stack:
        stack.start_worker("w1", concurrency=args.concurrency)
        stack.start_scheduler()
        with stack.producer() as producer:
            backlog = [
                {"email": f"backlog{i}@example.com", "connections": [slow]} for i in range(args.backlog)
            ]
            producer.publish_many(backlog)
            time.sleep(args.warmup)  # the slow drains are under way before the steady traffic starts
            published, ids, offered_s, late = publish_steadily(
                producer, args.rate, args.duration, steady, "mixed"
            )
        deadline = time.monotonic() + args.timeout
        seen = provider_times(server)
        while time.monotonic() < deadline and any((c, e) not in seen for e in published for c in steady):
            time.sleep(0.5)
            seen = provider_times(server)
        taken_in = []
        for email, request_id in ids.items():
            found = status.read(stack.redis, request_id)
            if found is not None and found.meta is not None:
                taken_in.append(found.meta.accepted_at - published[email])
        backlog_done = sum(1 for i in range(args.backlog) if (slow, f"backlog{i}@example.com") in seen)
    by_conn, missing = latencies(published, seen, steady)
    every = sorted(x for values in by_conn.values() for x in values)
    return {
        "mode": "mixed",
        "backlog_connection": slow,
        "backlog": args.backlog,
        "backlog_delivered_during_run": backlog_done,
        "requests": len(published),
        "offered_rate": args.rate,
        "offered_records_per_s": args.rate * len(steady),
        "achieved_publish_rate": round(len(published) / offered_s, 1),
        "published_late_by_100ms": late,
        "records_missing": missing,
        "intake_delay": _summary(sorted(taken_in)),
        "all": _summary(every),
        "connections": {name: _summary(values) for name, values in by_conn.items()},
    }


def _summary(values: list[float]) -> dict[str, Any]:
    return {
        "records": len(values),
        **{f"p{q}_ms": round(common.percentile(values, q) * 1000, 1) for q in (50, 95, 99)},
        "max_ms": round(values[-1] * 1000, 1) if values else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="requests published per second (default 100; --mixed: 125, 500 records/s on four connections)",
    )
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of steady load (default 30)")
    parser.add_argument("--concurrency", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--connections", nargs="+", default=list(CONNECTIONS), choices=CONNECTIONS,
                        help="connections every request goes to (default: all six)")  # fmt: skip
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="longest wait to settle after the load (s)"
    )
    parser.add_argument("--mixed", action="store_true",
                        help="steady traffic while a rate-limited connection drains a backlog "
                        "(default settings; see the description)")  # fmt: skip
    parser.add_argument("--backlog", type=int, default=2000, help="--mixed: backlog requests (default 2000)")
    parser.add_argument("--backlog-connection", default=BACKLOG_CONNECTION, choices=CONNECTIONS,
                        help="--mixed: the connection with the backlog (default cc-contacts)")  # fmt: skip
    parser.add_argument("--warmup", type=float, default=5.0,
                        help="--mixed: seconds the backlog drains first (default 5)")  # fmt: skip
    common.add_redis_argument(parser)
    args = parser.parse_args()
    if args.mixed and args.connections == list(CONNECTIONS):
        args.connections = [*MIXED_CONNECTIONS]
    if args.rate is None:
        args.rate = MIXED_RATE if args.mixed else DEFAULT_RATE
    with (
        tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp,
        common.bench_redis(args.redis_url) as url,
    ):
        machine = common.machine_info(url)
        print(common.describe_machine(machine))
        if args.mixed:
            print(
                f"no faults; {args.backlog_connection} keeps its default rate limit, "
                "the other connections' limits are lifted"
            )
        else:
            print(
                "no faults; rate limits lifted for the run "
                "(every connection's rate_limit null, sandbox limits off)"
            )
        with common.bench_sandbox() as server:
            result = (run_mixed if args.mixed else run)(args, url, server, Path(tmp))
    load_end = [round(x, 2) for x in os.getloadavg()]
    print(
        f"offered {args.rate:g} requests/s for {args.duration:g} s "
        f"(achieved {result['achieved_publish_rate']}/s), "
        f"{len(result['connections'])} connections per request; {result['records_missing']} records not seen"
    )
    extra = [("intake delay", result["intake_delay"])] if args.mixed else []
    if args.mixed:
        print(
            f"while {args.backlog_connection} drained a backlog of {args.backlog} "
            f"({result['backlog_delivered_during_run']} delivered by the end), default settings"
        )
    rows = [[name, s["records"], s["p50_ms"], s["p95_ms"], s["p99_ms"], s["max_ms"]]
            for name, s in [*result["connections"].items(), ("all", result["all"]), *extra]]  # fmt: skip
    common.print_table(["connection", "records", "p50 ms", "p95 ms", "p99 ms", "max ms"], rows)
    print(f"load average at end: {' '.join(map(str, load_end))}")
    common.write_json("latency", {"machine": machine, "load_avg_at_end": load_end, **result})


if __name__ == "__main__":
    main()
