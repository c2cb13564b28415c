"""Recovery after a SIGKILL: how long a killed worker's work waits before it is finished.

    python bench/recovery.py --kills 5

Two workers (``unsub worker --concurrency 2`` each) and ``unsub scheduler`` run against an in-process
sandbox whose providers answer ``--provider-latency-ms`` late (default 300, so a batch is out long
enough to be killed in), rate limits lifted, ``reclaim_idle_s`` at its production default (120 s):
only the heartbeats (``worker.pipeline.liveness``) can bring claims back in time. Two measurements,
``--kills`` rounds each:

1. **mid-batch**: ``--batch-requests`` requests are published to cc-partner and insider; as soon as
   a worker's processes hold claimed buffer records, its whole process group is SIGKILLed. Timed from
   the kill until every record it held has its outcome recorded (its buffer entry leaves the stream
   in that transaction).
2. **mid-intake**: one Celery message of ``--intake-requests`` requests (the default, 5,000, takes
   ten intake transactions) is published; as soon as a worker's intake loop holds it (pending in the
   intake stream's consumer group), its process group is SIGKILLed. Timed from the kill until the
   entry is acknowledged, which happens in the transaction that records the last of its requests.

By default the victim stays down until its work is finished, so another worker finishes it (the
case of a node lost for good); ``--restart-at-once`` starts it again right after the kill, as a pod
is restarted, and it takes its own claims back under its name. Each round then waits for the system
to settle and for the victim to be ready again. An unmeasured first round fetches every access
token, so no kill lands in a token renewal (whose lock a dead holder keeps until it expires); a round
that still finds a renewal lock at the kill says so. Results: ``bench/results/recovery.json``.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import _common as common

DEFAULT_KILLS: Final = 5
DEFAULT_PROVIDER_LATENCY_MS: Final = 300.0
DEFAULT_BATCH_REQUESTS: Final = 600
DEFAULT_INTAKE_REQUESTS: Final = 5000
CONNECTIONS: Final = ("cc-partner", "insider")
WORKERS: Final = ("w1", "w2")
#: How often the benchmark looks at the claims and at the entries it waits for.
POLL_S: Final = 0.01
#: Longest wait for a worker to hold work, and for killed work to be finished.
WAIT_S: Final = 180.0
#: Requests of the unmeasured first round (tokens fetched, processes warm).
WARM_UP_REQUESTS: Final = 100
INTAKE_STREAM: Final = "unsub:intake:json"
INTAKE_GROUP: Final = "intake"
BUFFER_GROUP: Final = "deliver"


def only_batch_connections(data: dict[str, Any]) -> None:
    """cc-partner and insider only (batch APIs), no client-side rate limit."""
    data["connections"] = [c for c in data["connections"] if c["name"] in CONNECTIONS]
    for conn in data["connections"]:
        conn["rate_limit"] = None


def held_by(client: Any, stream: str, group: str) -> dict[str, list[str]]:
    """Consumer -> ids of the entries it holds (claimed, no outcome yet)."""
    try:
        summary = client.xpending(stream, group)
    except Exception:  # no stream or group yet
        return {}
    found: dict[str, list[str]] = {}
    for consumer in summary.get("consumers") or []:
        if int(consumer["pending"]):
            name = str(consumer["name"])
            rows = client.xpending_range(stream, group, min="-", max="+", count=10_000, consumername=name)
            found[name] = [str(r["message_id"]) for r in rows]
    return found


def worker_of(consumer: str) -> str:
    """``w1@host#2`` / ``w1@host:intake`` -> ``w1``."""
    return consumer.partition("@")[0]


def still_there(client: Any, entries: list[tuple[str, str]]) -> int:
    pipe = client.pipeline(transaction=False)
    for stream, entry_id in entries:
        pipe.xrange(stream, entry_id, entry_id)
    return sum(bool(found) for found in pipe.execute())


def wait(condition: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + WAIT_S
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {WAIT_S:.0f}s for {what}")
        time.sleep(POLL_S)
    return value


class Rounds:
    """The stack, the two workers, and one round of each kind."""

    def __init__(self, stack: Any, args: argparse.Namespace) -> None:
        self.stack = stack
        self.args = args
        self.workers = {name: stack.start_worker(name, concurrency=2) for name in WORKERS}
        stack.start_scheduler()
        self.published = 0

    def publish(self, n: int, *, chunk_size: int) -> None:
        requests = [
            {"request_id": f"rec-{self.published + i}", "email": f"rec{self.published + i}@example.com"}
            for i in range(n)
        ]
        with self.stack.producer() as producer:
            producer.publish_many(requests, chunk_size=chunk_size)
        self.published += n

    def mid_batch(self) -> dict[str, Any]:
        self.publish(self.args.batch_requests, chunk_size=500)
        streams = [f"unsub:buf:{c}" for c in CONNECTIONS]

        def holding() -> list[tuple[str, str, list[str]]]:
            return [
                (s, c, ids) for s in streams for c, ids in held_by(self.stack.redis, s, BUFFER_GROUP).items()
            ]

        victim = worker_of(wait(holding, "a worker holding claimed records")[0][1])
        return self._kill_and_time(victim, holding, "records")

    def mid_intake(self) -> dict[str, Any]:
        self.publish(self.args.intake_requests, chunk_size=self.args.intake_requests)

        def holding() -> list[tuple[str, str, list[str]]]:
            found = held_by(self.stack.redis, INTAKE_STREAM, INTAKE_GROUP)
            return [(INTAKE_STREAM, c, ids) for c, ids in found.items()]

        victim = worker_of(wait(holding, "an intake loop holding the message")[0][1])
        return self._kill_and_time(victim, holding, "entries")

    def _kill_and_time(self, victim: str, holding: Callable[[], Any], unit: str) -> dict[str, Any]:
        proc = self.workers[victim]
        proc.kill(signal.SIGKILL)
        killed_at = time.monotonic()
        entries = [(s, e) for s, c, ids in holding() if worker_of(c) == victim for e in ids]
        token_locks = len(self.stack.redis.keys("unsub:token:*:lock"))
        if self.args.restart_at_once:
            self._start(victim, ready=False)
        wait(lambda: not still_there(self.stack.redis, entries), f"the {unit} {victim} held")
        seconds = time.monotonic() - killed_at
        self.stack.wait_settled(timeout_s=WAIT_S)
        if not self.args.restart_at_once:
            self._start(victim, ready=True)
        locked = f" (a token renewal lock was held: {token_locks})" if token_locks else ""
        print(f"  killed {victim} holding {len(entries)} {unit}: finished {seconds:.2f} s later{locked}")
        return {
            "victim": victim,
            "held": len(entries),
            "seconds": round(seconds, 3),
            "token_locks": token_locks,
        }

    def warm_up(self) -> None:
        """One unmeasured round trip, so every connection holds its access token before the kills."""
        self.publish(WARM_UP_REQUESTS, chunk_size=WARM_UP_REQUESTS)
        self.stack.wait_settled(expected_requests=self.published, timeout_s=WAIT_S)

    def _start(self, name: str, *, ready: bool) -> None:
        if ready:  # the killed worker's ready file is still there: wait for a new one
            (self.stack.workdir / f"health-{name}" / "ready").unlink(missing_ok=True)
        self.workers[name].start()


def summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    values = sorted(r["seconds"] for r in rounds)
    return {
        "kills": len(values),
        "median_s": round(statistics.median(values), 2),
        "max_s": values[-1],
        "min_s": values[0],
        "held": [r["held"] for r in rounds],
        "rounds": rounds,
    }


def run(args: argparse.Namespace, redis_url: str, server: Any, workdir: Path) -> dict[str, Any]:
    from unsub_dev.localstack.stack import LocalStack

    with LocalStack(
        workdir,
        redis_url=redis_url,
        sandbox_url=server.url,
        config_hook=only_batch_connections,
        settings_overrides={"reclaim_idle_s": 120.0},
    ) as stack:
        rounds = Rounds(stack, args)
        rounds.warm_up()
        print("mid-batch kills:")
        batch = [rounds.mid_batch() for _ in range(args.kills)]
        print("mid-intake kills:")
        intake = [rounds.mid_intake() for _ in range(args.kills)]
        snap = stack.wait_settled(expected_requests=rounds.published, timeout_s=WAIT_S)
    return {
        "requests": rounds.published,
        "delivered": {c.name: c.counters.get("delivered", 0) for c in snap.connections},
        "dead_letters": snap.dead_letters_now,
        "mid_batch": summary(batch),
        "mid_intake": summary(intake),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kills", type=int, default=DEFAULT_KILLS, help="rounds of each kind (default 5)")
    parser.add_argument("--provider-latency-ms", type=float, default=DEFAULT_PROVIDER_LATENCY_MS,
                        help="every sandbox provider answers this late (default 300)")  # fmt: skip
    parser.add_argument("--batch-requests", type=int, default=DEFAULT_BATCH_REQUESTS,
                        help="requests published per mid-batch round (default 600)")  # fmt: skip
    parser.add_argument("--intake-requests", type=int, default=DEFAULT_INTAKE_REQUESTS,
                        help="requests in the one message of a mid-intake round (default 5,000)")  # fmt: skip
    parser.add_argument("--restart-at-once", action="store_true",
                        help="start the victim again right after the kill (a pod restart)")  # fmt: skip
    common.add_redis_argument(parser)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="bench-recovery-") as tmp,
        common.bench_redis(args.redis_url) as url,
    ):
        machine = common.machine_info(url)
        print(common.describe_machine(machine))
        mode = "restarted at once" if args.restart_at_once else "left down until its work is finished"
        print(f"provider latency {args.provider_latency_ms:g} ms; reclaim_idle_s 120; the victim is {mode}")
        with common.bench_sandbox() as server:
            set_latency(server, args.provider_latency_ms)
            result = run(args, url, server, Path(tmp))
    load_end = [round(x, 2) for x in os.getloadavg()]
    kinds = (("mid-batch", result["mid_batch"]), ("mid-intake", result["mid_intake"]))
    rows = [[kind, s["kills"], s["median_s"], s["max_s"], s["min_s"]] for kind, s in kinds]
    common.print_table(["kill", "kills", "median s", "max s", "min s"], rows)
    print(
        f"{result['requests']} requests, delivered {result['delivered']}, "
        f"dead letters {result['dead_letters']}"
    )
    print(f"load average at end: {' '.join(map(str, load_end))}")
    report = {"machine": machine, "load_avg_at_end": load_end, "restart_at_once": args.restart_at_once}
    common.write_json("recovery", {**report, "provider_latency_ms": args.provider_latency_ms, **result})


def set_latency(server: Any, latency_ms: float) -> None:
    import httpx

    reply = httpx.post(f"{server.url}/_sandbox/faults", json={"*": {"latency_ms": latency_ms}}, timeout=10)
    reply.raise_for_status()


if __name__ == "__main__":
    main()
