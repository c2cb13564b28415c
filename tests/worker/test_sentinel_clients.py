"""Every client follows a Sentinel failover without a restart: the state store (and its hot-path
batches), the producer, Celery's broker and result backend, and the transport's quiet close.

Each test starts its own primary, replica and Sentinel on loopback (``tests.support.sentinel``),
SIGKILLs the primary and waits until the Sentinel promoted the replica.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml
from celery import Celery
from kombu import Connection
from typer.testing import CliRunner

from producer import names
from producer.client import Producer
from producer.errors import PublishError
from tests.support.sentinel import MASTER_NAME, SentinelTopology
from worker.app import celery_config
from worker.cli import app as cli
from worker.redis_batch import Batch
from worker.redis_client import forget_clients, redis_for
from worker.settings import load_settings
from worker.transport import SENTINEL_TRANSPORT, SentinelChannel

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

runner = CliRunner()


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[SentinelTopology]:
    with SentinelTopology(tmp_path / "sentinel", replicas=1, sentinels=1) as topo:
        yield topo
    forget_clients()


def fail_over(topo: SentinelTopology) -> int:
    """SIGKILL the primary, wait for the promotion, bring the dead node back as a replica."""
    old = topo.kill_primary()
    new = topo.wait_promoted(old)
    topo.restart_as_replica(old)
    return new


def test_the_state_store_client_follows_a_failover_without_a_restart(topology: SentinelTopology) -> None:
    client = redis_for(topology.url, sentinel_master=MASTER_NAME)
    client.set("before", "1")
    client.execute_command("WAIT", 1, 5000)

    new = fail_over(topology)
    client.set("after", "2")

    direct = topology.client(new)
    assert (direct.get("before"), direct.get("after")) == ("1", "2")
    assert client.get("before") == "1"


def test_a_hot_path_batch_runs_on_a_sentinel_pool_and_again_once_the_primary_changed(
    topology: SentinelTopology,
) -> None:
    client = redis_for(topology.url, sentinel_master=MASTER_NAME)
    assert Batch(client).execute_command("INCR", "n").xadd("s", {"k": "v"}).execute()[0] == 1
    client.execute_command("WAIT", 1, 5000)

    new = fail_over(topology)
    replies = Batch(client).execute_command("INCR", "n").execute()

    assert replies == [2]
    assert topology.client(new).xlen("s") == 1


def test_the_state_store_client_without_a_master_name_takes_the_settings_one(
    topology: SentinelTopology,
) -> None:
    from worker.settings import use_settings

    use_settings(load_settings(redis_url=topology.url, sentinel_master=MASTER_NAME))

    client = redis_for(topology.url)

    assert client.set("k", "v")
    assert topology.client(topology.primary_port()).get("k") == "v"


def test_the_producer_publishes_through_sentinel_and_a_replica_confirms_every_message(
    topology: SentinelTopology,
) -> None:
    with Producer(topology.url, sentinel_master=MASTER_NAME, replicas=1) as producer:
        first = producer.publish({"email": "jane@example.com"})
        new = fail_over(topology)
        second = producer.publish({"email": "john@example.com"})

    queued = topology.client(new).lrange(names.INTAKE_QUEUE, 0, -1)
    assert len(queued) == 2
    assert all(rid in "".join(queued) for rid in (first, second))


def test_a_publish_that_too_few_replicas_confirm_raises(topology: SentinelTopology) -> None:
    producer = Producer(topology.url, sentinel_master=MASTER_NAME, replicas=2, replica_timeout_s=0.2)

    with pytest.raises(PublishError, match="only 1 of the 2 replicas"):
        producer.publish({"email": "jane@example.com"})

    producer.close()


def test_unsub_send_and_import_publish_through_sentinel_and_wait_for_publish_replicas(
    topology: SentinelTopology, tmp_path: Path
) -> None:
    config = tmp_path / "u.yaml"
    settings = {"broker_url": topology.url, "sentinel_master": MASTER_NAME, "publish_replicas": 1}
    config.write_text(yaml.safe_dump(settings), encoding="utf-8")
    rows = tmp_path / "rows.csv"
    rows.write_text("email\nann@example.com\nbob@example.com\n", encoding="utf-8")

    sent = runner.invoke(cli, ["send", "jane@example.com", "--config", str(config)])
    imported = runner.invoke(cli, ["import", str(rows), "--config", str(config), "--no-progress"])
    config.write_text(yaml.safe_dump({**settings, "publish_replicas": 2, "publish_replica_timeout_s": 0.2}))
    refused = runner.invoke(cli, ["send", "joe@example.com", "--config", str(config)])

    assert (sent.exit_code, imported.exit_code) == (0, 0), sent.output + imported.output
    queued = topology.client(topology.primary_port()).lrange(names.INTAKE_QUEUE, 0, -1)
    assert sent.output.strip() in "".join(queued)
    assert len(queued) == 3  # send, import (one message), the refused send (taken, not confirmed)
    assert refused.exit_code == 3
    assert "only 1 of the 2 replicas" in refused.output


def test_a_sentinel_url_without_a_master_name_is_refused_by_the_library() -> None:
    with pytest.raises(ValueError, match="sentinel_master"):
        Producer("sentinel://127.0.0.1:26379/0")


# Celery's Redis backend stores results with SETEX, which redis-py 8 calls deprecated.
@pytest.mark.filterwarnings("ignore:Call to deprecated setex:DeprecationWarning")
def test_celerys_broker_and_result_backend_follow_a_failover_without_a_restart(
    topology: SentinelTopology,
) -> None:
    settings = load_settings(broker_url=topology.url, sentinel_master=MASTER_NAME)
    app = Celery("sentinel-test", set_as_current=False)
    app.conf.update(celery_config(settings))
    app.send_task("unsub.sentinel-test", queue=names.CONTROL_QUEUE)
    app.backend.store_result("t-before", {"n": 1}, "SUCCESS")
    topology.client(topology.primary_port()).execute_command("WAIT", 1, 5000)

    new = fail_over(topology)
    app.send_task("unsub.sentinel-test", queue=names.CONTROL_QUEUE)
    app.backend.store_result("t-after", {"n": 2}, "SUCCESS")

    assert topology.client(new).llen(names.CONTROL_QUEUE) == 2
    assert app.backend.get_task_meta("t-before")["result"] == {"n": 1}
    assert app.backend.get_task_meta("t-after")["result"] == {"n": 2}
    app.close()


def test_closing_a_sentinel_channel_whose_connection_is_gone_does_not_raise(
    topology: SentinelTopology,
) -> None:
    conn = Connection(
        topology.url, transport=SENTINEL_TRANSPORT, transport_options={"master_name": MASTER_NAME}
    )
    channel = conn.channel()
    queue = conn.SimpleQueue("unsub.test-transport", channel=channel)
    queue.put({"n": 1})
    queue.get(timeout=5)  # delivered, not acknowledged: the channel would restore it on close
    channel._disconnect_pools()
    channel.connection.client = None
    assert isinstance(channel, SentinelChannel)

    channel.close()

    assert channel.closed
    assert topology.client(topology.primary_port()).hlen("unacked") == 1


def test_the_killed_primary_comes_back_as_a_read_only_replica_of_the_new_one(
    topology: SentinelTopology,
) -> None:
    old = topology.primary_port()

    new = fail_over(topology)

    assert new != old
    with pytest.raises(redis.ReadOnlyError):
        topology.client(old).set("k", "v")
