"""End-to-end throughput of the pipeline against the naive design, in the same run.

    python bench/throughput.py --requests 100000 --naive-requests 5000

1. **pipeline**: ``--requests`` requests published through the producer (``publish_many``), each to
   every connection of the sandbox config (cc-partner, cc-contacts, whatcounts, whatcounts-ck,
   insider, easytools: one delivery record per connection), carried by one worker pod's worth of
   processes (``unsub worker --concurrency 2`` and ``unsub scheduler``) to an in-process provider
   sandbox. Timed from the first publish until the system is settled (every record delivered or
   dead-lettered).
2. **naive**: ``--naive-requests`` requests carried by one Celery task per record, each making the
   provider's one-record HTTP call with httpx (``bench/naive_app.py``), in a real Celery worker with
   the same concurrency, the same Redis and the same sandbox. Timed from the first task sent until
   every task has run.

Both: no faults, rate limits lifted (connections' ``rate_limit`` removed, the sandbox's easy.tools
limit off), auto-created contacts. ``--provider-latency-ms N`` makes every sandbox provider answer
every request (token calls included) N ms late, for both phases alike (the sandbox's ``latency_ms``
fault: an ``asyncio.sleep`` outside its lock, so other requests are served meanwhile); real provider
APIs answer in 100-300 ms, which the default of 0 hides. CPU is the user + system time of the worker
and scheduler process trees (pool children included, via psutil), per 1,000 records. The in-process
sandbox and the publisher share this process, whose CPU is reported apart. Results:
``bench/results/throughput.json``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

import _common as common

from worker.adapters.cc_contacts import CcContactsConnection

DEFAULT_REQUESTS: Final = 100_000
DEFAULT_NAIVE_REQUESTS: Final = 5_000
#: Real provider APIs answer in 100-300 ms; 50 ms is a conservative stand-in. 0 measures pure CPU.
DEFAULT_PROVIDER_LATENCY_MS: Final = 50.0
#: The connection default (``worker.settings``), what runs when ``--parallel-calls`` is not given.
DEFAULT_PARALLEL_CALLS: Final = CcContactsConnection.model_fields["parallel_calls"].default
CONNECTIONS: Final = ("cc-partner", "cc-contacts", "whatcounts", "whatcounts-ck", "insider", "easytools")
SAMPLE_INTERVAL_S: Final = 0.5
#: Provider types with one contact per call, whose adapters take ``parallel_calls``.
ONE_RECORD_TYPES: Final = ("cc_contacts", "easytools")


def make_requests(n: int, prefix: str, connections: list[str], scope: str) -> list[dict[str, Any]]:
    return [
        {
            "email": f"{prefix}{i}@example.com",
            "customer_key": f"ck-{prefix}{i}",
            "connections": connections,
            "scope": scope,
            "reason": "bench",
        }
        for i in range(n)
    ]


def lift_rate_limits(data: dict[str, Any]) -> None:
    """No rate limit on any connection (left out, a type's default applies: say 4/second for CC)."""
    for conn in data["connections"]:
        conn["rate_limit"] = None


def run_pipeline(args: argparse.Namespace, redis_url: str, server: Any, workdir: Path) -> dict[str, Any]:
    from unsub_dev.localstack.stack import LocalStack

    connections = list(args.connections)
    requests = make_requests(args.requests, "bench", connections, args.scope)
    expected_records = len(requests) * len(connections)
    calls_before = common.sandbox_requests(server)

    def configure(data: dict[str, Any]) -> None:
        lift_rate_limits(data)
        if args.parallel_calls is not None:
            for conn in data["connections"]:
                if conn["type"] in ONE_RECORD_TYPES:
                    conn["parallel_calls"] = args.parallel_calls

    with LocalStack(workdir, redis_url=redis_url, sandbox_url=server.url, config_hook=configure) as stack:
        worker = stack.start_worker("w1", concurrency=args.concurrency)
        scheduler = stack.start_scheduler()
        pids = [p for p in (worker.pid, scheduler.pid) if p is not None]
        cpu0, self0, redis0 = common.tree_cpu_s(pids), common.self_cpu_s(), _redis_cpu(args)
        commands0 = common.redis_commands(redis_url)
        start = time.perf_counter()
        with stack.producer() as producer:
            producer.publish_many(requests)
        published_s = time.perf_counter() - start
        finished: dict[str, float] = {}
        deadline = time.monotonic() + args.timeout
        while len(finished) < len(connections) and time.monotonic() < deadline:
            snap = stack.snapshot()
            for c in snap.connections:
                done = c.counters.get("delivered", 0) + c.counters.get("dead_lettered", 0)
                if c.name in connections and c.name not in finished and done >= len(requests):
                    finished[c.name] = time.perf_counter() - start
            if args.verbose:
                print(
                    f"{time.perf_counter() - start:6.1f}s intake={snap.intake} "
                    + " ".join(
                        f"{c.name}:{c.counters.get('delivered', 0)}/{c.pending}/{c.waiting_retries}"
                        for c in snap.connections
                    )
                )
            time.sleep(SAMPLE_INTERVAL_S)
        snap = stack.wait_settled(
            expected_requests=len(requests), timeout_s=max(10.0, deadline - time.monotonic())
        )
        elapsed = time.perf_counter() - start
        cpu = common.tree_cpu_s(pids) - cpu0
        self_cpu, redis_cpu = common.self_cpu_s() - self0, _redis_cpu(args) - redis0
        commands = common.commands_between(commands0, common.redis_commands(redis_url))
    calls = {k: v - calls_before.get(k, 0) for k, v in common.sandbox_requests(server).items()}
    per_conn = {
        c.name: {
            "delivered": c.counters.get("delivered", 0),
            "dead_lettered": c.counters.get("dead_lettered", 0),
            "retried": c.counters.get("retried", 0),
            "batches": c.counters.get("batches", 0),
            "provider_calls": c.counters.get("provider_calls", 0),
            "done_after_s": round(finished.get(c.name, elapsed), 2),
        }
        for c in snap.connections
        if c.name in connections
    }
    records = sum(c["delivered"] + c["dead_lettered"] for c in per_conn.values())
    return {
        "requests": len(requests),
        "records": records,
        "expected_records": expected_records,
        "delivered": sum(c["delivered"] for c in per_conn.values()),
        "dead_letters_by_reason": snap.dead_letters_total_by_reason,
        # Every command the Redis server ran while the pipeline worked (publishing, the benchmark's
        # own progress reads and the scheduler's ticks included), per record.
        "redis_commands_per_record": round(sum(commands.values()) / max(records, 1), 2),
        "redis_commands": commands,
        **_rates(
            records=records,
            requests=len(requests),
            published_s=published_s,
            elapsed=elapsed,
            cpu=cpu,
            self_cpu=self_cpu,
            redis_cpu=redis_cpu,
            calls=calls,
        ),
        "connections": per_conn,
    }


def run_naive(args: argparse.Namespace, redis_url: str, server: Any, workdir: Path) -> dict[str, Any]:
    import redis

    from unsub_dev.localstack.config import local_config, write_config

    sys.path.insert(0, str(common.ROOT / "bench"))
    workdir.mkdir(parents=True, exist_ok=True)
    data = local_config(server.url, redis_url)
    lift_rate_limits(data)
    config = write_config(workdir / "naive.yaml", data)
    env = {**os.environ, "NAIVE_BROKER_URL": redis_url, "NAIVE_CONFIG": str(config)}
    env["PYTHONPATH"] = os.pathsep.join([str(common.ROOT), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "celery", "-A", "bench.naive_app", "worker", "-Q", "naive",
           "--concurrency", str(args.concurrency), "--pool", "prefork", "--loglevel", "WARNING",
           "--without-gossip", "--without-mingle", "--without-heartbeat", "-n", "naive@%h"]  # fmt: skip
    log = (workdir / "naive.log").open("ab")
    proc = subprocess.Popen(
        cmd, cwd=common.ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    os.environ["NAIVE_BROKER_URL"] = redis_url
    from bench import naive_app

    naive_app.app.conf.broker_url = redis_url
    try:
        connections = list(args.connections)
        # Warm up: every pool process imports, connects and gets its tokens before the clock starts.
        for name in connections * args.concurrency * 2:
            naive_app.app.send_task(naive_app.TASK, args=[name, f"warmup-{name}@example.com", "ck-w"])
        _wait(lambda: int(client.get(naive_app.DONE_KEY) or 0) >= len(connections) * args.concurrency * 2,
              120, proc, workdir / "naive.log")  # fmt: skip
        client.delete(naive_app.DONE_KEY, naive_app.STATUS_KEY)
        requests = make_requests(args.naive_requests, "naive", connections, args.scope)
        tasks = [(name, r["email"], r["customer_key"]) for r in requests for name in connections]
        calls_before = common.sandbox_requests(server)
        cpu0, self0, redis0 = common.tree_cpu_s([proc.pid]), common.self_cpu_s(), _redis_cpu(args)
        start = time.perf_counter()
        with naive_app.app.producer_or_acquire() as producer:
            for task in tasks:
                naive_app.app.send_task(naive_app.TASK, args=list(task), producer=producer)
        published_s = time.perf_counter() - start
        _wait(lambda: int(client.get(naive_app.DONE_KEY) or 0) >= len(tasks), args.timeout, proc,
              workdir / "naive.log")  # fmt: skip
        elapsed = time.perf_counter() - start
        cpu = common.tree_cpu_s([proc.pid]) - cpu0
        self_cpu, redis_cpu = common.self_cpu_s() - self0, _redis_cpu(args) - redis0
        statuses = {k: int(v) for k, v in client.hgetall(naive_app.STATUS_KEY).items()}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
        client.close()
    calls = {k: v - calls_before.get(k, 0) for k, v in common.sandbox_requests(server).items()}
    records = len(tasks)
    ok = sum(n for k, n in statuses.items() if k.rsplit(":", 1)[1] in {"200", "201", "202", "204"})
    return {
        "requests": len(requests),
        "records": records,
        "delivered": ok,
        "answers": statuses,
        **_rates(
            records=records,
            requests=len(requests),
            published_s=published_s,
            elapsed=elapsed,
            cpu=cpu,
            self_cpu=self_cpu,
            redis_cpu=redis_cpu,
            calls=calls,
        ),
    }


_REDIS_PID: list[int] = []


def _redis_cpu(args: argparse.Namespace) -> float | None:
    """CPU seconds of the embedded Redis (None against a shared Redis: others use it too)."""
    return common.tree_cpu_s(_REDIS_PID) if _REDIS_PID else 0.0


def _wait(done: Any, timeout_s: float, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
            raise SystemExit(
                f"the naive worker {'exited' if proc.poll() is not None else 'stalled'}:\n{tail}"
            )
        time.sleep(0.2)


def _rates(
    *,
    records: int,
    requests: int,
    published_s: float,
    elapsed: float,
    cpu: float,
    self_cpu: float,
    redis_cpu: float | None,
    calls: dict[str, int],
) -> dict[str, Any]:
    """The timing, CPU and HTTP figures both designs report, computed the same way."""
    return {
        "publish_s": round(published_s, 2),
        "seconds": round(elapsed, 2),
        "records_per_s": records / elapsed,
        "requests_per_s": requests / elapsed,
        "worker_cpu_s": round(cpu, 2),
        "cpu_s_per_1000_records": cpu / records * 1000,
        "bench_process_cpu_s": round(self_cpu, 2),
        "redis_cpu_s": round(redis_cpu, 2) if redis_cpu is not None else None,
        "http_requests": sum(calls.values()),
        "http_requests_per_record": sum(calls.values()) / max(records, 1),
        "http_requests_by_provider": calls,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--requests", type=int, default=DEFAULT_REQUESTS, help="pipeline requests (default 100,000)"
    )
    parser.add_argument("--naive-requests", type=int, default=DEFAULT_NAIVE_REQUESTS,
                        help="naive baseline requests (default 5,000)")  # fmt: skip
    parser.add_argument(
        "--concurrency", type=int, default=2, help="worker processes of each design (default 2)"
    )
    parser.add_argument("--connections", nargs="+", default=list(CONNECTIONS), choices=CONNECTIONS,
                        help="connections every request goes to (default: all six)")  # fmt: skip
    parser.add_argument("--scope", choices=["list", "global"], default="list",
                        help="default list (global: a CC partner call per address)")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=1800.0, help="give up on a phase after this (s)")
    parser.add_argument("--provider-latency-ms", type=float, default=DEFAULT_PROVIDER_LATENCY_MS,
                        help="every sandbox provider answers this late, both phases "
                        "(default 50; 0 = CPU only)")  # fmt: skip
    parser.add_argument("--parallel-calls", type=int, default=None,
                        help="the pipeline's parallel_calls for cc-contacts and easytools "
                        "(default: the connection default, 8)")  # fmt: skip
    parser.add_argument("--skip-naive", action="store_true", help="measure the pipeline only")
    parser.add_argument("--verbose", action="store_true", help="print progress while the pipeline runs")
    common.add_redis_argument(parser)
    args = parser.parse_args()

    with (
        tempfile.TemporaryDirectory(prefix="bench-throughput-") as tmp,
        common.bench_redis(args.redis_url) as url,
    ):
        if args.redis_url is None:
            _REDIS_PID.extend(_embedded_redis_pids(url))
        machine = common.machine_info(url)
        print(common.describe_machine(machine))
        print(
            "no faults; rate limits lifted for the run "
            "(every connection's rate_limit null, sandbox limits off); "
            f"provider latency {args.provider_latency_ms:g} ms on every call, both designs"
        )
        with common.bench_sandbox() as server:
            if args.provider_latency_ms:
                set_provider_latency(server, args.provider_latency_ms)
            pipeline = run_pipeline(args, url, server, Path(tmp) / "pipeline")
            _flush(url)
            naive = None if args.skip_naive else run_naive(args, url, server, Path(tmp) / "naive")
        load_end = [round(x, 2) for x in os.getloadavg()]
    rows = [_row("pipeline", pipeline)]
    if naive is not None:
        rows.append(_row("naive (1 task/record)", naive))
    print(
        f"{len(args.connections)} connections per request, scope={args.scope}, "
        f"concurrency {args.concurrency}, provider latency {args.provider_latency_ms:g} ms, "
        f"parallel_calls {args.parallel_calls or DEFAULT_PARALLEL_CALLS}"
    )
    common.print_table(
        ["design", "requests", "records", "seconds", "records/s", "CPU s/1k rec", "HTTP/rec"], rows
    )
    top = ", ".join(
        f"{k} {n / max(pipeline['records'], 1):.2f}" for k, n in list(pipeline["redis_commands"].items())[:8]
    )
    print(f"pipeline Redis commands per record: {pipeline['redis_commands_per_record']} ({top}, ...)")
    ratio = pipeline["records_per_s"] / naive["records_per_s"] if naive else None
    cpu_ratio = naive["cpu_s_per_1000_records"] / pipeline["cpu_s_per_1000_records"] if naive else None
    if ratio is not None and cpu_ratio is not None:
        print(f"pipeline / naive: {ratio:.1f}x records/s, {cpu_ratio:.1f}x less worker CPU per record")
    print("pipeline, per connection:")
    common.print_table(
        ["connection", "delivered", "dead", "batches", "HTTP calls", "done after s"],
        [
            [n, c["delivered"], c["dead_lettered"], c["batches"], c["provider_calls"], c["done_after_s"]]
            for n, c in pipeline["connections"].items()
        ],
    )
    print(f"load average at end: {' '.join(map(str, load_end))}")
    common.write_json(
        "throughput",
        {
            "machine": machine,
            "load_avg_at_end": load_end,
            "scope": args.scope,
            "concurrency": args.concurrency,
            "provider_latency_ms": args.provider_latency_ms,
            "parallel_calls": args.parallel_calls or DEFAULT_PARALLEL_CALLS,
            "connections": args.connections,
            "pipeline": pipeline,
            "naive": naive,
            "ratio_records_per_s": ratio,
            "ratio_cpu_per_record": cpu_ratio,
        },
    )


def _row(label: str, r: dict[str, Any]) -> list[Any]:
    return [label, r["requests"], r["records"], r["seconds"], r["records_per_s"], r["cpu_s_per_1000_records"],
            r["http_requests_per_record"]]  # fmt: skip


def set_provider_latency(server: Any, latency_ms: float) -> None:
    """Every provider of the sandbox answers ``latency_ms`` late from now on (its latency fault)."""
    import httpx

    reply = httpx.post(f"{server.url}/_sandbox/faults", json={"*": {"latency_ms": latency_ms}}, timeout=10)
    reply.raise_for_status()
    applied = {name: f["latency_ms"] for name, f in reply.json().items()}
    print(f"sandbox latency per provider (ms): {applied}")


def _flush(url: str) -> None:
    import redis

    redis.Redis.from_url(url).flushdb()


def _embedded_redis_pids(url: str) -> list[int]:
    import psutil

    port = url.rsplit(":", 1)[1].split("/")[0]
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        line = " ".join(proc.info["cmdline"] or [])
        if "redis-server" in line and (f":{port}" in line or f"--port {port}" in line):
            found.append(proc.pid)
    return found


if __name__ == "__main__":
    main()
