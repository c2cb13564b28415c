"""Rate-limit efficiency: achieved provider requests/s as a share of the configured limit, and 429s.

    python bench/ratelimit.py --limit 10 --requests 300

One connection (default ``easytools``: two calls a record, find then unsubscribe, both counted by
the provider) is configured with ``rate_limit: <limit>/second``, shared by every worker through
Redis. The sandbox enforces the same limit (``rate_limit_per_minute = 60 * limit``, a fixed
one-minute window per token, answering 429 with Retry-After beyond it). ``--requests`` requests
are published at once and carried by ``--workers`` worker processes of ``--concurrency`` each
(default 2 x 2, which fits a 2-core machine) plus the scheduler.

Measured from the sandbox side (every request to that provider is time-stamped as it arrives):
achieved requests/s between the first and the last call, that as a share of the limit, the most
calls seen in any one-second window, and the 429s answered. Results: ``bench/results/ratelimit.json``.
"""

from __future__ import annotations

import argparse
import bisect
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Final

import _common as common

PROVIDER_OF: Final = {"easytools": "easytools", "insider": "insider", "cc-contacts": "cc_contacts"}


def stamp_calls(server: Any, provider: str) -> list[float]:
    """Wrap the in-process provider's ``serve`` to note when each request arrives."""
    stamps: list[float] = []
    target = server.sandbox.providers[provider]
    original = target.serve

    async def serve(operation: str, handler: Any, *, tenant: str = "default") -> Any:
        stamps.append(time.time())
        return await original(operation, handler, tenant=tenant)

    target.serve = serve
    return stamps


def max_in_window(stamps: list[float], window_s: float = 1.0) -> int:
    return max((bisect.bisect_left(stamps, t + window_s) - i for i, t in enumerate(stamps)), default=0)


def run(args: argparse.Namespace, redis_url: str, server: Any, workdir: Path) -> dict[str, Any]:
    from unsub_dev.localstack.stack import LocalStack

    provider = PROVIDER_OF[args.connection]
    stamps = stamp_calls(server, provider)

    def configure(data: dict[str, Any]) -> None:
        for conn in data["connections"]:
            conn["rate_limit"] = f"{args.limit}/second" if conn["name"] == args.connection else None

    with LocalStack(workdir, redis_url=redis_url, sandbox_url=server.url, config_hook=configure) as stack:
        for i in range(args.workers):
            stack.start_worker(f"w{i + 1}", concurrency=args.concurrency)
        stack.start_scheduler()
        requests = [{"email": f"rl{i}@example.com", "connections": [args.connection], "scope": "list"}
                    for i in range(args.requests)]  # fmt: skip
        start = time.time()
        with stack.producer() as producer:
            producer.publish_many(requests)
        snap = stack.wait_settled(expected_requests=len(requests), timeout_s=args.timeout)
        elapsed = time.time() - start
    calls = sorted(t for t in stamps if t >= start)
    with server.sandbox.core.lock:
        rejected = server.sandbox.providers[provider].ledger.rejected
        status_429 = sum(by.get("429", 0) for by in rejected.values())
    span = calls[-1] - calls[0] if len(calls) > 1 else float("nan")
    achieved = (len(calls) - 1) / span if len(calls) > 1 else float("nan")
    conn = next(c for c in snap.connections if c.name == args.connection)
    return {
        "connection": args.connection,
        "limit_per_s": args.limit,
        "sandbox_limit_per_minute": args.limit * 60,
        "workers": args.workers,
        "concurrency": args.concurrency,
        "requests": args.requests,
        "provider_calls": len(calls),
        "calls_span_s": round(span, 2),
        "achieved_per_s": round(achieved, 2),
        "efficiency": round(achieved / args.limit, 3),
        "max_calls_in_any_1s": max_in_window(calls),
        "status_429": status_429,
        "throttled_429_counted_by_workers": conn.counters.get("throttled_429", 0),
        "delivered": conn.counters.get("delivered", 0),
        "dead_lettered": conn.counters.get("dead_lettered", 0),
        "retried": conn.counters.get("retried", 0),
        "seconds_to_settle": round(elapsed, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connection", choices=sorted(PROVIDER_OF), default="easytools")
    parser.add_argument("--limit", type=int, default=10, help="configured requests/second (default 10)")
    parser.add_argument("--requests", type=int, default=300, help="requests published (default 300)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--concurrency", type=int, default=2, help="pool processes per worker (default 2)")
    parser.add_argument("--timeout", type=float, default=600.0, help="longest wait to settle (s)")
    common.add_redis_argument(parser)
    args = parser.parse_args()
    provider = PROVIDER_OF[args.connection]
    overrides = {provider: {"rate_limit_per_minute": args.limit * 60}} if provider == "easytools" else {}
    with (
        tempfile.TemporaryDirectory(prefix="bench-ratelimit-") as tmp,
        common.bench_redis(args.redis_url) as url,
    ):
        machine = common.machine_info(url)
        print(common.describe_machine(machine))
        with common.bench_sandbox(overrides) as server:
            if provider != "easytools":  # only easy.tools has a configured default; the others by fault
                from unsub_dev.sandbox.faults import FaultSettings

                with server.sandbox.core.lock:
                    faults = server.sandbox.providers[provider].faults
                    faults.configure(FaultSettings(rate_limit_per_minute=args.limit * 60), time.time())
            result = run(args, url, server, Path(tmp))
    load_end = [round(x, 2) for x in os.getloadavg()]
    print(f"{args.connection}: rate_limit {args.limit}/second, sandbox {args.limit * 60}/minute, "
          f"{args.workers} workers x concurrency {args.concurrency}")  # fmt: skip
    common.print_table(
        ["connection", "calls", "span s", "achieved/s", "of limit", "max in 1 s", "429s"],
        [
            [
                args.connection,
                result["provider_calls"],
                result["calls_span_s"],
                result["achieved_per_s"],
                f"{result['efficiency']:.0%}",
                result["max_calls_in_any_1s"],
                result["status_429"],
            ]
        ],
    )
    print(f"load average at end: {' '.join(map(str, load_end))}")
    common.write_json("ratelimit", {"machine": machine, "load_avg_at_end": load_end, **result})


if __name__ == "__main__":
    main()
