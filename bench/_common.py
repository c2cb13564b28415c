"""What every benchmark shares: machine facts, a Redis to run against, the sandbox, CPU accounting,
a small table and the JSON report in ``bench/results/``.

Benchmarks are run by hand (``python bench/<name>.py --help``); nothing here asserts a speed.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

ROOT: Final = Path(__file__).resolve().parent.parent
RESULTS_DIR: Final = Path(__file__).resolve().parent / "results"

if str(ROOT) not in sys.path:  # `python bench/x.py` from anywhere imports the project
    sys.path.insert(0, str(ROOT))


# -- machine ----------------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def redis_version(url: str) -> str:
    import redis

    client = redis.Redis.from_url(url)
    try:
        return str(client.info("server").get("redis_version", "?"))
    finally:
        client.close()


def machine_info(redis_url: str | None = None) -> dict[str, Any]:
    """CPU, cores, RAM, OS, Python, Redis version and the load when the run started."""
    import psutil

    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    if redis_url is not None:
        info["redis"] = redis_version(redis_url)
    return info


def describe_machine(info: dict[str, Any]) -> str:
    redis = f", Redis {info['redis']}" if "redis" in info else ""
    load = " ".join(f"{x:.2f}" for x in info["load_avg_at_start"])
    return (
        f"{info['cpu']}, {info['cores_usable']} cores, {info['ram_gib']} GiB RAM, {info['os']}, "
        f"Python {info['python']}{redis}; load average at start {load}"
    )


# -- Redis ----------------------------------------------------------------------------------------


@contextmanager
def bench_redis(url: str | None) -> Iterator[str]:
    """``url`` (its DB flushed before and after), or a throwaway embedded Redis when None."""
    import redis

    if url is None:
        from unsub_dev.localstack.redis_server import EmbeddedRedis

        with EmbeddedRedis() as server:
            yield server.url
        return
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield url
    finally:
        client.flushdb()
        client.close()


def add_redis_argument(parser: Any) -> None:
    parser.add_argument(
        "--redis-url",
        default=None,
        help="Redis to run against (its DB is FLUSHED before and after); default: a throwaway "
        "embedded Redis on a free port (unsub_dev.localstack.redis_server.EmbeddedRedis)",
    )


# -- sandbox ----------------------------------------------------------------------------------------


class StampedEvents(list):  # type: ignore[type-arg]
    """A ledger's event list that notes when (epoch seconds, float) each event was recorded.

    The sandbox's own ``at`` is an ISO time to the second; latency needs better, so the benchmark
    swaps this list into the in-process sandbox's ledgers instead of changing the sandbox.
    """

    def append(self, item: Any) -> None:
        if isinstance(item, dict):
            item.setdefault("recorded_at", time.time())
        super().append(item)


def stamp_events(server: Any) -> None:
    for provider in server.sandbox.providers.values():
        provider.ledger.events = StampedEvents(provider.ledger.events)


@contextmanager
def bench_sandbox(overrides: dict[str, Any] | None = None) -> Iterator[Any]:
    """An in-process sandbox (uvicorn in a thread) on a free port, every contact auto-created,
    no faults, its own rate limits lifted unless ``overrides`` set them, events time-stamped."""
    from unsub_dev.sandbox.config import load_config
    from unsub_dev.sandbox.server import SandboxServer

    data: dict[str, Any] = {
        "auto_contacts": True,
        "easytools": {"rate_limit_per_minute": None},
        # One refresh token for the whole run: the naive baseline and the pipeline both refresh.
        "cc_contacts": {"rotate_refresh_tokens": False},
    }
    for key, value in (overrides or {}).items():
        data[key] = {**data[key], **value} if isinstance(value, dict) and key in data else value
    with SandboxServer(load_config(overrides=data)) as server:
        stamp_events(server)
        yield server


def sandbox_requests(server: Any) -> dict[str, int]:
    """HTTP requests each sandbox provider answered so far (token calls included)."""
    with server.sandbox.core.lock:
        return {name: sum(p.ledger.requests.values()) for name, p in server.sandbox.providers.items()}


def sandbox_rejections(server: Any) -> dict[str, dict[str, int]]:
    with server.sandbox.core.lock:
        return {
            name: {status: n for by in p.ledger.rejected.values() for status, n in by.items()}
            for name, p in server.sandbox.providers.items()
        }


# -- CPU ----------------------------------------------------------------------------------------------


def tree_cpu_s(pids: Iterable[int]) -> float:
    """CPU seconds (user + system) of these processes and every descendant, dead ones included.

    A live process counts its own time; a child that exited and was waited for is in its parent's
    ``children_user``/``children_system`` (the kernel adds it there when it is reaped), so summing
    own + reaped-children time over the live tree counts every process exactly once. (getrusage
    RUSAGE_CHILDREN of this process would miss grandchildren still running, such as Celery's pool.)
    """
    import psutil

    total = 0.0
    seen: set[int] = set()
    for pid in pids:
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for proc in procs:
            if proc.pid in seen:
                continue
            seen.add(proc.pid)
            try:
                t = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += t.user + t.system + t.children_user + t.children_system
    return total


def self_cpu_s() -> float:
    """CPU seconds of this process (the benchmark's publisher and in-process sandbox)."""
    t = os.times()
    return t.user + t.system


# -- Redis commands -----------------------------------------------------------------------------------


def redis_commands(url: str) -> dict[str, int]:
    """Commands the Redis server has run so far, per command (``INFO commandstats``; commands run
    inside Lua scripts are counted too, as is EVALSHA itself)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def commands_between(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Commands run between two ``redis_commands`` readings, most frequent first, ``info`` left out."""
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    delta = {k: n for k, n in delta.items() if n > 0 and k != "info"}
    return dict(sorted(delta.items(), key=lambda kv: -kv[1]))


# -- output -------------------------------------------------------------------------------------------


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A left-aligned first column, the rest right-aligned; floats with a sensible precision."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}" if value else "0"
        if isinstance(value, int):
            return f"{value:,}"
        return str(value)

    text = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in text)) for i, h in enumerate(headers)]
    line = "  ".join(
        h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths, strict=True))
    )
    print(line)
    print("-" * len(line))
    for row in text:
        print(
            "  ".join(
                v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths, strict=True))
            )
        )


def write_json(name: str, report: dict[str, Any]) -> Path:
    """``bench/results/<name>.json`` (gitignored), with the command that produced it."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    report = {"command": " ".join(["python", *sys.argv]), "finished_at": time.time(), **report}
    path.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"written to {path}")
    return path


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of already sorted values."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), math.ceil(q / 100 * len(sorted_values))))
    return sorted_values[rank - 1]
