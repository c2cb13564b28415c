"""Benchmark what ``replicas=1`` costs a publish: the producer's rate and latency with and without
WAIT, against a primary with one replica on this machine.

    python bench/publish.py --publishes 5000 --threads 1 4

Starts its own primary and replica (the same ``redis-server`` as the other benchmarks, on free
loopback ports, nothing persisted) and, for ``replicas`` 0 and 1, runs:
- ``one request``: ``Producer.publish`` of one request per message, from each of ``--threads`` threads
  sharing one producer (what a web service publishing on every opt-out does);
- ``500 a message``: ``publish_many`` in 500-request messages (what ``unsub import`` does).
Each row reports publishes/s, requests/s and the p50/p99 latency of one publish. The intake queue is
emptied between rows. Results go to ``bench/results/publish.json``.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from _common import describe_machine, machine_info, percentile, print_table, write_json

DEFAULT_PUBLISHES: Final = 5000
DEFAULT_THREADS: Final = (1, 4)
#: Requests per message in the bulk rows (the producer's default chunk).
BULK_CHUNK: Final = 500
BULK_MESSAGES: Final = 200


@contextmanager
def primary_with_replica() -> Iterator[str]:
    """A primary and one replica in sync; yields the primary's URL."""
    import redis

    from unsub_dev.localstack.redis_server import free_port, redis_answers, server_binary

    workdir = Path(tempfile.mkdtemp(prefix="unsub-bench-publish-"))
    ports = [free_port(), free_port()]
    procs = []
    for port, primary in zip(ports, [None, ports[0]], strict=True):
        args = [str(server_binary()), "--bind", "127.0.0.1", "--port", str(port), "--save", ""]
        args += ["--appendonly", "no", "--dir", str(workdir), "--logfile", str(workdir / f"{port}.log")]
        args += ["--replicaof", "127.0.0.1", str(primary)] if primary else []
        procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    url = f"redis://127.0.0.1:{ports[0]}/0"
    try:
        while not (redis_answers(url) and _replicas_online(redis.Redis.from_url(url)) == 1):
            time.sleep(0.05)
        yield url
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)


def _replicas_online(client: Any) -> int:
    info = client.info("replication")
    return sum(
        1 for k, v in info.items() if k.startswith("slave") and isinstance(v, dict) and v["state"] == "online"
    )


def run(url: str, replicas: int, threads: int, publishes: int, chunk: int) -> dict[str, Any]:
    """``publishes`` messages of ``chunk`` requests from ``threads`` threads; rate and latency."""
    from producer.client import Producer

    latencies: list[float] = []
    lock = threading.Lock()
    with Producer(url, replicas=replicas, pool_limit=max(threads, 1)) as producer:

        def work(n: int, offset: int) -> None:
            mine = []
            for i in range(n):
                requests = [{"email": f"bench{offset + i}.{j}@example.com"} for j in range(chunk)]
                started = time.perf_counter()
                producer.publish_many(requests) if chunk > 1 else producer.publish(requests[0])
                mine.append(time.perf_counter() - started)
            with lock:
                latencies.extend(mine)

        share = publishes // threads
        workers = [threading.Thread(target=work, args=(share, t * share)) for t in range(threads)]
        started = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        elapsed = time.perf_counter() - started
    _empty(url)
    latencies.sort()
    done = share * threads
    return {
        "replicas": replicas,
        "threads": threads,
        "requests_per_message": chunk,
        "publishes": done,
        "seconds": round(elapsed, 3),
        "publishes_per_s": round(done / elapsed, 1),
        "requests_per_s": round(done * chunk / elapsed, 1),
        "p50_ms": round(percentile(latencies, 50) * 1000, 3),
        "p99_ms": round(percentile(latencies, 99) * 1000, 3),
    }


def _empty(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    client.flushdb()
    client.execute_command("WAIT", 1, 5000)
    client.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--publishes", type=int, default=DEFAULT_PUBLISHES, help="one-request publishes per row"
    )
    parser.add_argument(
        "--threads", type=int, nargs="+", default=list(DEFAULT_THREADS), help="publishing threads"
    )
    parser.add_argument(
        "--bulk-messages", type=int, default=BULK_MESSAGES, help="500-request messages per row"
    )
    args = parser.parse_args()
    rows = []
    with primary_with_replica() as url:
        info = machine_info(url)
        print(describe_machine(info))
        for replicas in (0, 1):
            rows += [run(url, replicas, t, args.publishes, 1) for t in args.threads]
            rows.append(run(url, replicas, 1, args.bulk_messages, BULK_CHUNK))
    headers = ["replicas", "threads", "req/msg", "publishes/s", "requests/s", "p50 ms", "p99 ms"]
    keys = [
        "replicas",
        "threads",
        "requests_per_message",
        "publishes_per_s",
        "requests_per_s",
        "p50_ms",
        "p99_ms",
    ]
    print_table(headers, [[row[k] for k in keys] for row in rows])
    write_json("publish", {"machine": info, "rows": rows})


if __name__ == "__main__":
    main()
