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


def connection_of(provider: str, event: dict[str, Any]) -> str:
    if provider == "whatcounts":
        return REALMS.get(str(event.get("realm")), "whatcounts")
    return provider.replace("_", "-")


def run(args: argparse.Namespace, redis_url: str, server: Any, workdir: Path) -> dict[str, Any]:
    from worker.localstack.stack import LocalStack

    connections = list(args.connections)
    total = int(args.rate * args.duration)
    published: dict[str, float] = {}
    with LocalStack(
        workdir, redis_url=redis_url, sandbox_url=server.url, config_hook=lift_rate_limits
    ) as stack:
        stack.start_worker("w1", concurrency=args.concurrency)
        stack.start_scheduler()
        late = 0
        with stack.producer() as producer:
            start = time.monotonic()
            for i in range(total):
                due = start + i / args.rate
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                elif wait < -0.1:
                    late += 1
                email = f"lat{i}@example.com"
                published[email] = time.time()
                producer.publish(
                    {"email": email, "customer_key": f"ck-{i}", "connections": connections, "scope": "list"}
                )
            offered_s = time.monotonic() - start
        snap = stack.wait_settled(expected_requests=total, timeout_s=args.timeout)
    seen: dict[tuple[str, str], float] = {}
    with server.sandbox.core.lock:
        for provider_name, provider in server.sandbox.providers.items():
            for event in provider.ledger.events:
                key = (connection_of(provider_name, event), str(event.get("email")))
                if "recorded_at" in event and key not in seen:
                    seen[key] = float(event["recorded_at"])
    by_conn: dict[str, list[float]] = {name: [] for name in connections}
    missing = 0
    for email, t0 in published.items():
        for name in connections:
            t1 = seen.get((name, email))
            if t1 is None:
                missing += 1
            else:
                by_conn[name].append(t1 - t0)
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
        "--rate", type=float, default=100.0, help="requests published per second (default 100)"
    )
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of steady load (default 30)")
    parser.add_argument("--concurrency", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--connections", nargs="+", default=list(CONNECTIONS), choices=CONNECTIONS,
                        help="connections every request goes to (default: all six)")  # fmt: skip
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="longest wait to settle after the load (s)"
    )
    common.add_redis_argument(parser)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp,
        common.bench_redis(args.redis_url) as url,
    ):
        machine = common.machine_info(url)
        print(common.describe_machine(machine))
        print(
            "no faults; rate limits lifted for the run "
            "(every connection's rate_limit null, sandbox limits off)"
        )
        with common.bench_sandbox() as server:
            result = run(args, url, server, Path(tmp))
    load_end = [round(x, 2) for x in os.getloadavg()]
    print(
        f"offered {args.rate:g} requests/s for {args.duration:g} s "
        f"(achieved {result['achieved_publish_rate']}/s), "
        f"{len(args.connections)} connections per request; {result['records_missing']} records not seen"
    )
    rows = [[name, s["records"], s["p50_ms"], s["p95_ms"], s["p99_ms"], s["max_ms"]]
            for name, s in [*result["connections"].items(), ("all", result["all"])]]  # fmt: skip
    common.print_table(["connection", "records", "p50 ms", "p95 ms", "p99 ms", "max ms"], rows)
    print(f"load average at end: {' '.join(map(str, load_end))}")
    common.write_json("latency", {"machine": machine, "load_avg_at_end": load_end, **result})


if __name__ == "__main__":
    main()
