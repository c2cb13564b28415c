"""Intake of one-request messages against a plain Celery no-op task, on the same Redis, same run.

    python bench/intake.py --messages 20000 --runs 2

Most upstream services publish one opt-out per message. For each run:

1. **Celery no-op**: ``--messages`` task messages for a task that does nothing (``bench/noop_app.py``,
   Celery's defaults) are pushed onto its queue, and a real ``celery worker --concurrency 2`` that is
   already up and warm takes them; timed until the queue is empty and nothing is unacknowledged.
2. **intake**: as many ``unsub.intake`` messages, one request each (the producer's own message
   format), pushed onto the intake queue while an ``unsub worker --queues intake`` (the intake loop;
   its pool takes no delivery work here) is up; timed until intake counted every request.

Messages are built beforehand and pushed in pipelines of 1,000, so publishing is never the limit.
Both workers run on the same Redis with the same concurrency. The ratio intake/no-op is the figure
of issue 13 (target: at least 0.7). Results: ``bench/results/intake.json``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import _common as common

from producer import names
from producer.base import to_payload, to_request
from producer.envelope import task_message
from producer.masking import chunk_argsrepr

PUSH_CHUNK: Final = 1000
POLL_S: Final = 0.02


def push(url: str, queue: str, messages: list[str]) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        for start in range(0, len(messages), PUSH_CHUNK):
            client.lpush(queue, *messages[start : start + PUSH_CHUNK])
    finally:
        client.close()


def wait(done: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise SystemExit("timed out")
        time.sleep(POLL_S)


def run_noop(url: str, n: int, concurrency: int, workdir: Path) -> dict[str, Any]:
    import redis

    from bench import noop_app

    env = {**os.environ, "NOOP_BROKER_URL": url}
    env["PYTHONPATH"] = os.pathsep.join([str(common.ROOT), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "celery", "-A", "bench.noop_app", "worker", "-Q", noop_app.QUEUE,
           "--concurrency", str(concurrency), "--pool", "prefork", "--loglevel", "WARNING",
           "--without-gossip", "--without-mingle", "--without-heartbeat", "-n", "noop@%h"]  # fmt: skip
    log = (workdir / "noop.log").open("ab")
    proc = subprocess.Popen(
        cmd, cwd=common.ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    client = redis.Redis.from_url(url)

    def idle() -> bool:
        return int(client.llen(noop_app.QUEUE)) == 0 and int(client.hlen("unacked")) == 0

    try:
        push(url, noop_app.QUEUE, noop_messages(concurrency * 20))
        wait(idle, 120)
        messages = noop_messages(n)
        cpu0 = common.tree_cpu_s([proc.pid])
        start = time.perf_counter()
        push(url, noop_app.QUEUE, messages)
        wait(idle, 600)
        elapsed = time.perf_counter() - start
        cpu = common.tree_cpu_s([proc.pid]) - cpu0
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
        log.close()
        client.close()
    return {
        "messages": n,
        "seconds": round(elapsed, 3),
        "per_s": n / elapsed,
        "cpu_ms_per_message": cpu / n * 1000,
    }


def noop_messages(n: int) -> list[str]:
    from bench import noop_app

    return [
        task_message(noop_app.TASK, [], task_id=str(uuid.uuid4()), queue=noop_app.QUEUE, argsrepr="()")
        for _ in range(n)
    ]


def intake_messages(n: int, prefix: str) -> list[str]:
    messages = []
    for i in range(n):
        payload = to_payload(to_request({"email": f"{prefix}{i}@example.com", "request_id": f"{prefix}-{i}"}))
        messages.append(task_message(
            names.INTAKE_TASK, [payload], task_id=str(uuid.uuid4()), queue=names.INTAKE_QUEUE,
            argsrepr=chunk_argsrepr([payload]),
        ))  # fmt: skip
    return messages


def run_intake(
    url: str, n: int, concurrency: int, server_url: str, workdir: Path, run: int
) -> dict[str, Any]:
    from unsub_dev.localstack.stack import LocalStack
    from worker.pipeline import counters

    def one_connection(data: dict[str, Any]) -> None:
        data["connections"] = [c for c in data["connections"] if c["name"] == "insider"]

    with LocalStack(workdir, redis_url=url, sandbox_url=server_url, config_hook=one_connection) as stack:
        worker = stack.start_worker("w1", queues="intake", concurrency=concurrency)
        push(url, names.INTAKE_QUEUE, intake_messages(concurrency * 20, f"warm{run}-"))
        wait(lambda: counters.read_intake(stack.redis).get("requests", 0) >= concurrency * 20, 120)
        before = counters.read_intake(stack.redis).get("requests", 0)
        messages = intake_messages(n, f"run{run}-")
        cpu0 = common.tree_cpu_s([worker.pid] if worker.pid else [])
        start = time.perf_counter()
        push(url, names.INTAKE_QUEUE, messages)
        wait(lambda: counters.read_intake(stack.redis).get("requests", 0) - before >= n, 600)
        elapsed = time.perf_counter() - start
        cpu = common.tree_cpu_s([worker.pid] if worker.pid else []) - cpu0
    return {
        "messages": n,
        "seconds": round(elapsed, 3),
        "per_s": n / elapsed,
        "cpu_ms_per_message": cpu / n * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=20_000, help="messages per phase (default 20,000)")
    parser.add_argument("--runs", type=int, default=2, help="runs of both phases (default 2)")
    parser.add_argument("--concurrency", type=int, default=2, help="worker processes of each (default 2)")
    common.add_redis_argument(parser)
    args = parser.parse_args()
    results = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-intake-") as tmp,
        common.bench_redis(args.redis_url) as url,
    ):
        machine = common.machine_info(url)
        print(common.describe_machine(machine))
        with common.bench_sandbox() as server:
            for run in range(args.runs):
                workdir = Path(tmp) / f"run{run}"
                workdir.mkdir()
                noop = run_noop(url, args.messages, args.concurrency, workdir)
                _flush(url)
                intake = run_intake(url, args.messages, args.concurrency, server.url, workdir, run)
                _flush(url)
                results.append({"noop": noop, "intake": intake, "ratio": intake["per_s"] / noop["per_s"]})
    load_end = [round(x, 2) for x in os.getloadavg()]
    rows = []
    for i, r in enumerate(results, 1):
        rows.append(_row(f"run {i}: Celery no-op", r["noop"], ""))
        rows.append(_row(f"run {i}: intake", r["intake"], f"{r['ratio']:.2f}x"))
    common.print_table(["phase", "messages", "seconds", "messages/s", "CPU ms/msg", "intake/no-op"], rows)
    print(f"load average at end: {' '.join(map(str, load_end))}")
    common.write_json(
        "intake",
        {"machine": machine, "load_avg_at_end": load_end, "concurrency": args.concurrency, "runs": results},
    )


def _row(label: str, phase: dict[str, Any], ratio: str) -> list[Any]:
    return [label, phase["messages"], phase["seconds"], phase["per_s"], phase["cpu_ms_per_message"], ratio]


def _flush(url: str) -> None:
    import redis

    redis.Redis.from_url(url).flushdb()


if __name__ == "__main__":
    main()
