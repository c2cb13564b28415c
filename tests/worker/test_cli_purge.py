"""`unsub stats --purge-connection NAME`: the keys of a connection removed from the configuration go."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from typer.testing import CliRunner

from tests.support.cli_config import write_cli_config
from worker import keys
from worker.cli import app
from worker.pipeline import streams

runner = CliRunner()
GONE = "gone"


@pytest.fixture
def config(tmp_path: Path, redis_url: str) -> Path:
    return write_cli_config(tmp_path, redis_url)


def unsub(config: Path, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, [*args, "--config", str(config)], env={"COLUMNS": "200"})
    return result.exit_code, result.output


def leave_keys(client: redis.Redis, name: str) -> set[str]:
    """What a connection's workers leave behind once it is idle (its buffer stream emptied)."""
    client.hincrby(keys.stats(name), "delivered", 3)
    client.hincrby(keys.histogram(name, "call_seconds"), "count", 1)
    client.hset(keys.breaker(name), "state", "closed")
    client.set(keys.refresh_token(name), "rt")
    client.hset(keys.contact_cache(name), "sha", "uuid")
    client.zadd(f"{keys.rate_limit_namespace(name)}:1/second", {"m": 1})
    client.set(keys.rate_cooldown(name), "429")
    client.zadd(f"{keys.rate_limit_namespace(f'{name}:token')}:5/minute", {"m": 1})
    streams.ensure_group(client, keys.buffer_stream(name), keys.BUFFER_GROUP)
    return set(client.keys(f"*{name}*"))


def test_purging_a_removed_connection_lists_its_keys_then_deletes_them_with_yes(
    config: Path, redis_client: redis.Redis
) -> None:
    left = leave_keys(redis_client, GONE)
    kept = leave_keys(redis_client, "wc")

    asked, listed = unsub(config, "stats", "--purge-connection", GONE)
    still = set(redis_client.keys("*"))
    code, out = unsub(config, "stats", "--purge-connection", GONE, "--yes")

    assert asked == 2
    assert {line.strip() for line in listed.splitlines() if line.startswith("  ")} == left
    assert "add --yes" in listed
    assert still == left | kept
    assert code == 0, out
    assert f"purged {len(left)} key(s) of connection {GONE}" in out
    assert set(redis_client.keys("*")) == kept


def test_a_configured_connection_is_not_purged(config: Path, redis_client: redis.Redis) -> None:
    left = leave_keys(redis_client, "wc")

    code, out = unsub(config, "stats", "--purge-connection", "wc", "--yes")

    assert code == 2
    assert "wc is still configured" in out
    assert set(redis_client.keys("*")) == left


def test_a_removed_connection_with_records_still_buffered_or_waiting_is_not_purged(
    config: Path, redis_client: redis.Redis
) -> None:
    left = leave_keys(redis_client, GONE)
    redis_client.xadd(keys.buffer_stream(GONE), {"record": "{}"})
    redis_client.zadd(keys.retry_zset(GONE), {"{}": 1.0})

    code, out = unsub(config, "stats", "--purge-connection", GONE, "--yes")

    assert code == 2
    assert "1 buffered and 1 waiting record(s)" in out
    assert set(redis_client.keys("*")) == left | {keys.retry_zset(GONE)}


def test_a_name_no_connection_may_have_is_refused_before_any_pattern_is_built(
    config: Path, redis_client: redis.Redis
) -> None:
    redis_client.set("unsub:stats:x", "1")

    code, out = unsub(config, "stats", "--purge-connection", "*", "--yes")

    assert code == 2
    assert "'*' is not a connection name" in out
    assert redis_client.get("unsub:stats:x") == "1"
