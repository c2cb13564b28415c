"""`unsub demo`: the README's first command runs the whole system, checks it against the sandbox,
never touches a Redis DB that is not its own, and stops everything it started."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis

from producer.contract import parse_request
from tests.support.waiting import wait_for
from unsub_dev.localstack import demo
from unsub_dev.localstack.demo_mix import CONNECTIONS, INVALID_MESSAGES, build_mix
from unsub_dev.localstack.demo_report import Report, build_report, check_lines
from unsub_dev.localstack.redis_server import free_port
from worker import keys
from worker.pipeline import stats
from worker.pipeline.stats import ConnectionStats, Snapshot
from worker.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_CONFIG = ROOT / "worker" / "examples" / "sandbox.yaml"
DEMO_TIMEOUT_S = 240


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNSUB_")}
    return {**env, "COLUMNS": "120", **extra}


def _run_demo(*args: str, env: dict[str, str] | None = None, timeout: float = DEMO_TIMEOUT_S) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "worker", "demo", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env or _env(),
        timeout=timeout,
    )


# -- the mix and the verdict (no processes) ------------------------------------------------------


def test_the_mix_is_reproducible_valid_and_covers_every_connection_and_failure() -> None:
    mix = build_mix(300)
    assert mix.requests == 300
    assert [r["email"] for w in mix.waves for r in w] == [r["email"] for w in build_mix(300).waves for r in w]
    requests = [parse_request(r) for wave in mix.waves for r in wave]  # the producer would accept them
    assert len({r.email for r in requests}) == len(requests), "unique addresses: one delivery per pair"
    assert set(mix.delivered) == set(CONNECTIONS)
    assert all(n >= 50 for n in mix.delivered.values()), mix.delivered
    assert mix.dead["whatcounts-ck"]["missing_customer_key"] >= 5
    assert mix.dead["cc-contacts"]["contact_not_found"] >= 5
    assert mix.invalid == len(INVALID_MESSAGES) == 2
    assert {r.scope.value for r in requests} == {"global", "list"}
    assert {r.source.value for r in requests} == {"Contact", "Account", "System"}
    assert all(len(wave) > 0 for wave in mix.waves)
    # Expected deliveries follow from the requests themselves.
    planned: Counter[str] = Counter()
    for r in requests:
        for name in r.connections or CONNECTIONS:
            missing_key = name == "whatcounts-ck" and r.customer_key_for(name) is None
            unknown = r.email.startswith("unknown-")
            if not missing_key and not unknown:
                planned[name] += 1
    assert planned == mix.delivered


def test_the_mix_refuses_a_request_count_outside_its_range() -> None:
    with pytest.raises(ValueError, match="between 20 and 5000"):
        build_mix(5)


def test_a_configured_url_maps_to_the_demo_db_and_an_explicit_db_is_kept() -> None:
    assert demo.demo_db_url("redis://localhost:6379/0", explicit=False) == "redis://localhost:6379/10"
    assert demo.demo_db_url("redis://:pw@redis:6379", explicit=False) == "redis://:pw@redis:6379/10"
    assert demo.demo_db_url("redis://127.0.0.1:6379/12", explicit=True) == "redis://127.0.0.1:6379/12"
    assert demo.demo_db_url("redis://127.0.0.1:6379", explicit=True) == "redis://127.0.0.1:6379/10"


def _snapshot(counters: dict[str, dict[str, int]]) -> Snapshot:
    settings = load_settings(EXAMPLE_CONFIG)
    conns = [
        ConnectionStats(
            name=c.name,
            type=c.type,
            enabled=True,
            pending=0,
            waiting_retries=0,
            next_retry_at=None,
            oldest_pending_age_s=None,
            breaker="closed",
            breaker_reason=None,
            breaker_open_until=None,
            dead_letters_now=0,
            counters=counters.get(c.name, {}),
        )
        for c in settings.connections
    ]
    return Snapshot(
        taken_at=0.0,
        connections=conns,
        intake={"requests": 1, "invalid": 0},
        dead_letters_by_reason={},
        dead_letters_total_by_reason={},
        dead_letters_now=0,
    )


def _state(events: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    providers = ("cc_partner", "cc_contacts", "whatcounts", "insider", "easytools")
    return {
        "providers": {
            p: {"unsubscribes": events.get(p, []), "rejected": {}, "token_requests": 1} for p in providers
        }
    }


def _report(counters: dict[str, dict[str, int]], events: dict[str, list[dict[str, Any]]]) -> Report:
    mix = build_mix(20)
    mix.waves, mix.invalid_waves = [[{"email": "a@example.com"}]], [[]]
    mix.delivered = Counter({"cc-partner": 2, "whatcounts-ck": 1})
    mix.dead = {"whatcounts-ck": Counter({"missing_customer_key": 1})}
    return build_report(
        _snapshot(counters),
        _state(events),
        load_settings(EXAMPLE_CONFIG),
        mix,
        expired_token_provider=None,
        outage_provider=None,
    )


def test_the_verdict_counts_what_the_sandbox_recorded_per_account_and_realm() -> None:
    counters = {
        "cc-partner": {"delivered": 2},
        "whatcounts-ck": {"delivered": 1, "dead_lettered": 1, "dead:missing_customer_key": 1},
    }
    events = {
        "cc_partner": [
            {"email": "a@example.com", "account": "a07e1lxqqqo0"},
            {"email": "a@example.com", "account": "a07e1lxqqqo0"},  # the same opt-out twice: one
            {"email": "b@example.com", "account": "*"},  # every account, this one among them
            {"email": "c@example.com", "account": "b18f2myrrrp1"},  # another client account
        ],
        "whatcounts": [
            {"email": "a@example.com", "realm": "ck-realm", "list_id": "7"},
            {"email": "a@example.com", "realm": "sandbox-realm", "list_id": "5"},  # the other connection
        ],
    }
    report = _report(counters, events)
    rows = {r.connection: r for r in report.rows}
    assert (rows["cc-partner"].sandbox_unsubscribed, rows["cc-partner"].ok) == (2, True)
    assert (rows["whatcounts-ck"].sandbox_unsubscribed, rows["whatcounts-ck"].ok) == (1, True)
    assert rows["whatcounts"].sandbox_unsubscribed == 1
    assert not rows["whatcounts"].ok, "the sandbox saw an opt-out the system did not count"
    assert not report.ok


def test_the_verdict_fails_when_a_delivered_count_has_no_opt_out_in_the_sandbox() -> None:
    counters = {
        "cc-partner": {"delivered": 2},
        "whatcounts-ck": {"delivered": 1, "dead:missing_customer_key": 1},
    }
    events = {
        "cc_partner": [{"email": "a@example.com", "account": "a07e1lxqqqo0"}],
        "whatcounts": [{"email": "a@example.com", "realm": "ck-realm", "list_id": "7"}],
    }
    report = _report(counters, events)
    failed = [r.connection for r in report.rows if not r.ok]
    assert failed == ["cc-partner"]
    assert any("cc-partner: expected 2 delivered" in line for line in check_lines(report))


def test_the_verdict_fails_when_dead_letters_differ_from_the_expected_ones() -> None:
    counters = {"cc-partner": {"delivered": 2}, "whatcounts-ck": {"delivered": 1, "dead:auth_failed": 1}}
    events = {
        "cc_partner": [{"email": f"{n}@example.com", "account": "a07e1lxqqqo0"} for n in "ab"],
        "whatcounts": [{"email": "a@example.com", "realm": "ck-realm", "list_id": "7"}],
    }
    report = _report(counters, events)
    assert [r.connection for r in report.rows if not r.ok] == ["whatcounts-ck"]


# -- the Redis DB it runs on ---------------------------------------------------------------------


@pytest.mark.integration
def test_claiming_a_db_refuses_foreign_data_and_flushes_only_its_own(
    redis_client: redis.Redis, redis_url: str
) -> None:
    redis_client.set("customer:42", "not the demo's")
    with pytest.raises(demo.DemoDbInUseError, match=demo.MARKER_KEY):
        demo.claim_demo_db(redis_url)
    assert redis_client.get("customer:42") == "not the demo's"
    assert not redis_client.exists(demo.MARKER_KEY)

    redis_client.delete("customer:42")
    demo.claim_demo_db(redis_url)  # empty: claimed
    assert redis_client.exists(demo.MARKER_KEY)
    redis_client.hset(keys.stats("cc-partner"), mapping={"delivered": 3})
    demo.claim_demo_db(redis_url)  # the demo's own: flushed, marker kept
    assert redis_client.keys("*") == [demo.MARKER_KEY]


@pytest.mark.integration
def test_the_demo_refuses_a_db_holding_other_data_and_leaves_it_alone(
    redis_client: redis.Redis, redis_url: str
) -> None:
    redis_client.hset(keys.stats("cc-partner"), mapping={"delivered": 7})
    redis_client.set("session:1", "x")
    before = {k: redis_client.dump(k) for k in redis_client.keys("*")}

    result = _run_demo("--redis-url", redis_url, timeout=60)

    assert result.returncode == 2, result.stdout + result.stderr
    assert demo.MARKER_KEY in result.stderr
    assert {k: redis_client.dump(k) for k in redis_client.keys("*")} == before


@pytest.mark.integration
def test_clean_removes_only_a_db_the_demo_marked(redis_client: redis.Redis, redis_url: str) -> None:
    redis_client.set("customer:42", "not the demo's")
    with pytest.raises(demo.DemoDbInUseError, match="nothing was removed"):
        demo.clean_demo_db(redis_url)
    assert redis_client.get("customer:42") == "not the demo's"

    redis_client.delete("customer:42")
    redis_client.set(demo.MARKER_KEY, "earlier run")
    redis_client.hset(keys.stats("cc-partner"), mapping={"delivered": 3})

    assert demo.clean_demo_db(redis_url) == 2
    assert redis_client.dbsize() == 0


@pytest.mark.integration
def test_what_a_demo_leaves_is_counted_with_its_time_to_live(
    redis_client: redis.Redis, redis_url: str
) -> None:
    redis_client.set(demo.MARKER_KEY, "run")
    redis_client.hset(keys.stats("cc-partner"), mapping={"delivered": 3})
    redis_client.set("status:a", "x", ex=3600)
    redis_client.set("status:b", "x", ex=86400)

    left = demo.leftover(redis_url)

    assert left == demo.Leftover(keys=4, expiring=2, longest_ttl_s=86400.0)


@pytest.mark.integration
def test_the_demo_says_what_it_leaves_and_clean_removes_it(redis_client: redis.Redis, redis_url: str) -> None:
    redis_client.set(demo.MARKER_KEY, "earlier run")
    redis_client.set("status:a", "x", ex=3600)

    result = _run_demo("--clean", "--redis-url", redis_url, timeout=60)

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"removed 2 key(s) from {redis_url}" in result.stdout
    assert redis_client.dbsize() == 0


def test_the_closing_lines_say_how_many_keys_stay_how_long_and_how_to_remove_them() -> None:
    from worker.cli.demo import leftover_lines

    lines = leftover_lines(
        "redis://localhost:6379/10",
        demo.Leftover(keys=1812, expiring=1500, longest_ttl_s=30 * 86400.0),
        explicit=False,
    )

    assert lines[0] == (
        "the demo's 1812 keys stay in redis://localhost:6379/10: 1500 expire within 30.0d, "
        "312 (counters, the marker) until removed"
    )
    assert (
        "UNSUB_BROKER_URL=redis://localhost:6379/10 unsub stats --config worker/examples/sandbox.yaml"
        in lines[1]
    )
    assert lines[2].split() == ["remove:", "unsub", "demo", "--clean"]


def test_an_explicit_redis_url_that_does_not_answer_exits_3() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    result = _run_demo("--redis-url", url, timeout=60)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "no Redis answers" in result.stderr


def test_a_redis_url_that_cannot_work_is_bad_usage() -> None:
    result = _run_demo("--redis-url", "http://localhost:6379/0", timeout=60)

    assert result.returncode == 2, result.stdout + result.stderr
    assert "--redis-url: http:// is not a Redis URL scheme" in result.stderr


def test_a_bad_request_count_is_bad_usage() -> None:
    result = _run_demo("--requests", "3", timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "--requests" in result.stderr


# -- end to end ----------------------------------------------------------------------------------


@pytest.mark.integration
def test_the_demo_delivers_the_mix_and_its_table_matches_the_sandbox_and_the_counters(
    redis_client: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    # Left over from an earlier demo run in this DB: flushed at start, or the counts would not add up.
    redis_client.set(demo.MARKER_KEY, "earlier run")
    redis_client.hset(keys.stats("cc-partner"), mapping={"delivered": 1000})
    requests = 120

    result = _run_demo(
        "--redis-url", redis_url, "--requests", str(requests), "--json", "--keep-logs", str(tmp_path)
    )

    logs = "\n".join(p.read_text(errors="replace")[-2000:] for p in tmp_path.glob("*.log"))
    assert result.returncode == 0, result.stdout + result.stderr + logs
    out = json.loads(result.stdout)
    assert out["ok"]
    assert out["settled"]
    assert out["requests"] == requests
    mix = build_mix(requests)
    rows = {r["connection"]: r for r in out["connections"]}
    assert set(rows) == set(CONNECTIONS)
    for name, row in rows.items():
        assert row["delivered"] == row["sandbox_unsubscribed"] == mix.delivered[name], row
        assert row["dead"] == dict(mix.dead.get(name, {})), row
        assert row["ok"] is True
    assert rows["insider"]["retried"] >= 1, "the outage was retried"
    assert {c["name"]: c["ok"] for c in out["checks"]} == {
        "intake": True,
        "token expiry": True,
        "outage": True,
    }

    # The numbers the demo printed are the system's own counters, still in its DB.
    settings = load_settings(EXAMPLE_CONFIG)
    snap = stats.collect(redis_client, settings)
    for conn in snap.connections:
        assert conn.counters.get("delivered", 0) == rows[conn.name]["delivered"]
        assert conn.pending == conn.waiting_retries == 0
    assert snap.intake["requests"] == requests
    assert snap.dead_letters_total_by_reason == {
        "invalid_email": 2,
        "missing_customer_key": mix.dead["whatcounts-ck"]["missing_customer_key"],
        "contact_not_found": mix.dead["cc-contacts"]["contact_not_found"]
        + mix.dead["easytools"]["contact_not_found"],
    }
    assert redis_client.exists(demo.MARKER_KEY)
    left = out["left_in_redis"]
    assert left["keys"] == redis_client.dbsize()
    assert 0 < left["expiring"] < left["keys"]
    assert left["longest_ttl_s"] <= settings.status_retention_s


@pytest.mark.integration
def test_a_demo_that_does_not_settle_in_time_exits_1_and_says_what_is_pending(
    redis_client: redis.Redis, redis_url: str
) -> None:
    result = _run_demo("--redis-url", redis_url, "--timeout-s", "0.5")

    assert result.returncode == 1, result.stdout + result.stderr
    assert "not settled" in result.stdout
    assert "some checks failed" in result.stdout


@pytest.mark.integration
def test_the_demo_starts_an_embedded_redis_when_the_configured_one_does_not_answer() -> None:
    nothing = f"redis://127.0.0.1:{free_port()}/0"

    result = _run_demo("--requests", "40", env=_env(UNSUB_BROKER_URL=nothing))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "an embedded Redis" in result.stderr
    assert nothing in result.stderr
    table = result.stdout
    for name in CONNECTIONS:
        line = next(line for line in table.splitlines() if line.startswith(name + " "))
        assert line.rstrip().endswith("✓"), line
    assert "every check passed" in table


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.integration
def test_interrupting_the_demo_stops_every_process_it_started(
    redis_client: redis.Redis, redis_url: str
) -> None:
    args = [sys.executable, "-m", "worker", "demo", "--redis-url", redis_url, "--requests", "2000"]
    with subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=_env()
    ) as proc:
        assert proc.stderr is not None
        try:
            seen = []
            for line in proc.stderr:  # stage lines: wait until the worker and scheduler run
                seen.append(line)
                if line.startswith("wave 1"):
                    break
            started = psutil.Process(proc.pid).children(recursive=True)
            assert len(started) >= 3, f"worker, its pool and the scheduler: {started}\n{''.join(seen)}"
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=90) == 130
            assert "interrupted" in proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()
    wait_for(
        lambda: not any(_alive(p) for p in started),
        timeout_s=30,
        message=lambda: f"children still running: {[p for p in started if _alive(p)]}",
    )
