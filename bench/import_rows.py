"""Benchmark `unsub import`: rows/s and peak RSS for a generated CSV, against two baselines.

    python bench/import_rows.py --rows 1000000 --redis-url redis://127.0.0.1:6379/12

Each measurement runs in its own process (so peak RSS is that run's alone):
- ``csv parse (floor)``: reading the CSV with the stdlib, nothing else;
- ``import --dry-run``: reading and validating every row;
- ``import``: reading, validating and publishing in 500-request task messages;
- ``naive 1 msg/row``: the same rows validated and sent one task message each (at most
  ``--naive-rows`` rows, since it is the slow path being compared against).
The Redis DB given is flushed before and after each publishing run. Results go to
``bench/results/import.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

RESULTS: Final = Path(__file__).parent / "results" / "import.json"
DEFAULT_ROWS: Final = 1_000_000
DEFAULT_NAIVE_ROWS: Final = 20_000


def generate(path: Path, rows: int) -> None:
    with path.open("w", encoding="utf-8") as out:
        out.write("email,connections,reason\n")
        out.writelines(f"user{i}@example.com,wc;ins,bench\n" for i in range(rows))


def _peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def run_floor(path: str) -> int:
    with open(path, encoding="utf-8", newline="") as f:
        return sum(1 for _ in csv.reader(f)) - 1


def run_cli(path: str, redis_url: str, dry_run: bool) -> int:
    from typer.testing import CliRunner

    from worker.cli import app

    config = Path(path).with_suffix(".yaml")
    config.write_text(f"broker_url: {redis_url}\n", encoding="utf-8")
    args = ["import", path, "--config", str(config), "--no-progress", *(["--dry-run"] if dry_run else [])]
    result = CliRunner().invoke(app, args)
    if result.exit_code != 0:
        raise SystemExit(f"unsub import failed ({result.exit_code}): {result.output}")
    return int(result.output.split()[0])


def run_naive(path: str, redis_url: str, limit: int) -> int:
    from producer import Producer

    sent = 0
    with open(path, encoding="utf-8", newline="") as f, Producer(redis_url) as producer:
        for row in csv.DictReader(f):
            if sent >= limit:
                break
            producer.publish({"email": row["email"], "connections": row["connections"].split(";")})
            sent += 1
    return sent


def child(mode: str, path: str, redis_url: str, limit: int) -> None:
    start = time.perf_counter()
    if mode == "floor":
        rows = run_floor(path)
    elif mode == "naive":
        rows = run_naive(path, redis_url, limit)
    else:
        rows = run_cli(path, redis_url, dry_run=mode == "dry-run")
    elapsed_s = time.perf_counter() - start
    print(json.dumps({"rows": rows, "seconds": elapsed_s, "peak_rss_mib": _peak_rss_mib()}))


def measure(mode: str, path: Path, redis_url: str, limit: int) -> dict[str, Any]:
    if mode in {"import", "naive"}:
        _flush(redis_url)
    cmd = [sys.executable, __file__, "--child", mode, "--file", str(path), "--redis-url", redis_url,
           "--naive-rows", str(limit)]  # fmt: skip
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    result["rows_per_s"] = result["rows"] / result["seconds"]
    if mode in {"import", "naive"}:
        _flush(redis_url)
    return result


def _flush(redis_url: str) -> None:
    import redis

    redis.Redis.from_url(redis_url).flushdb()


LABELS: Final = {
    "floor": "csv parse (floor)",
    "dry-run": "import --dry-run",
    "import": "import (publish)",
    "naive": "naive 1 msg/row",
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS)
    parser.add_argument("--naive-rows", type=int, default=DEFAULT_NAIVE_ROWS)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/12")
    parser.add_argument("--child", choices=sorted(LABELS), help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.file, args.redis_url, args.naive_rows)
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.csv"
        generate(path, args.rows)
        size_mib = path.stat().st_size / 2**20
        results = {mode: measure(mode, path, args.redis_url, args.naive_rows) for mode in LABELS}
    print(f"{args.rows} rows, {size_mib:.1f} MiB CSV")
    print(f"{'run':<20} {'rows':>9} {'seconds':>8} {'rows/s':>9} {'peak RSS MiB':>13}")
    for mode, r in results.items():
        print(f"{LABELS[mode]:<20} {r['rows']:>9} {r['seconds']:>8.1f} {r['rows_per_s']:>9.0f} "
              f"{r['peak_rss_mib']:>13.1f}")  # fmt: skip
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    report = {"rows": args.rows, "csv_mib": round(size_mib, 1), "runs": results}
    RESULTS.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
