"""The real producer against the real Redis broker: messages, chunks, validation, retries."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from producer import InvalidRequestError, Producer, PublishError, UnsubscribeRequest, names
from tests.support.intake_queue import queued_requests, queued_tasks
from tests.support.pipeline_harness import INSIDER
from tests.support.waiting import wait_for
from unsub_dev.localstack.processes import ManagedProcess
from worker.pipeline import counters


@pytest.fixture
def producer(redis_url: str, redis_client: redis.Redis) -> Iterator[Producer]:
    with Producer(redis_url) as p:
        yield p


def test_publishing_one_request_puts_one_intake_task_message_on_the_intake_queue(
    producer: Producer, redis_client: redis.Redis
) -> None:
    request_id = producer.publish({"email": "Jane.Doe@Example.com", "reason": "preference centre"})

    [task] = queued_tasks(redis_client)
    assert task.task == names.INTAKE_TASK
    assert task.payload["request_id"] == request_id
    assert task.payload["email"] == "jane.doe@example.com"
    assert task.payload["reason"] == "preference centre"
    assert "customer_key" not in task.payload  # absent fields are left out, not sent as null


def test_flower_sees_masked_addresses_only(producer: Producer, redis_client: redis.Redis) -> None:
    producer.publish_many([{"email": f"person{i}@example.com"} for i in range(5)])

    [task] = queued_tasks(redis_client)
    assert "p***@example.com" in task.argsrepr
    assert "person" not in task.argsrepr
    assert "2 more" in task.argsrepr
    assert task.kwargsrepr == "{}"


def test_publish_many_sends_one_task_message_per_chunk_and_returns_ids_in_order(
    redis_url: str, redis_client: redis.Redis
) -> None:
    requests = [{"email": f"u{i}@example.com", "request_id": f"r{i}"} for i in range(1201)]

    with Producer(redis_url, chunk_size=500) as producer:
        ids = producer.publish_many(requests)

    assert ids == [f"r{i}" for i in range(1201)]
    assert [len(t.requests) for t in queued_tasks(redis_client)] == [500, 500, 201]
    assert [r["request_id"] for r in queued_requests(redis_client)] == ids


def test_an_invalid_request_names_its_field_and_index_and_nothing_is_sent(
    producer: Producer, redis_client: redis.Redis
) -> None:
    requests = [{"email": "a@example.com"}, {"email": "b@example.com"}, {"email": "c@example.com", "scop": 1}]

    with pytest.raises(InvalidRequestError) as caught:
        producer.publish_many(requests)

    assert caught.value.index == 2
    assert caught.value.problems == ["scop: Extra inputs are not permitted"]
    assert "request #2" in str(caught.value)
    assert redis_client.llen(names.INTAKE_QUEUE) == 0


def test_publish_stream_sends_lazily_chunk_by_chunk_from_a_generator(
    producer: Producer, redis_client: redis.Redis
) -> None:
    rows = ({"email": f"u{i}@example.com"} for i in range(250))

    chunks = producer.publish_stream(rows, chunk_size=100)
    assert redis_client.llen(names.INTAKE_QUEUE) == 0
    first = next(chunks)
    assert redis_client.llen(names.INTAKE_QUEUE) == 1
    rest = list(chunks)

    assert [(c.first_index, len(c.request_ids)) for c in [first, *rest]] == [(0, 100), (100, 100), (200, 50)]
    assert redis_client.llen(names.INTAKE_QUEUE) == 3


def test_validated_request_objects_are_sent_as_they_are(
    producer: Producer, redis_client: redis.Redis
) -> None:
    request = UnsubscribeRequest(email="x@example.com", request_id="fixed-1", connections=["wc"])

    assert producer.publish(request) == "fixed-1"
    assert queued_requests(redis_client)[0]["connections"] == ["wc"]


def test_an_unreachable_broker_raises_publish_error_after_retrying() -> None:
    producer = Producer("redis://127.0.0.1:1/0", retry_policy={"max_retries": 1, "interval_start": 0})

    with pytest.raises(PublishError, match=r"redis://127\.0\.0\.1:1/0"):
        producer.publish({"email": "a@example.com"})
    producer.close()


def test_the_broker_password_never_appears_in_publish_errors() -> None:
    producer = Producer("redis://:hunter22@127.0.0.1:1/0", retry_policy={"max_retries": 0})

    with pytest.raises(PublishError) as caught:
        producer.ping()
    assert "hunter22" not in str(caught.value)
    producer.close()


def test_a_chunk_size_outside_the_limits_is_refused(redis_url: str) -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        Producer(redis_url, chunk_size=0)


def test_the_library_imports_without_the_worker_package() -> None:
    code = "import sys, producer; sys.exit(any(m.split('.')[0] == 'worker' for m in sys.modules))"

    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


@pytest.mark.integration
def test_a_real_worker_takes_in_every_request_the_producer_published(
    redis_url: str,
    redis_client: redis.Redis,
    write_config: Callable[..., Path],
    start_worker: Callable[..., ManagedProcess],
) -> None:
    config = write_config(connections=[INSIDER])
    start_worker(config, queues="intake")

    with Producer(redis_url, chunk_size=40) as producer:
        producer.publish_many([{"email": f"w{i}@example.com"} for i in range(100)])

    wait_for(lambda: counters.read_intake(redis_client).get("accepted") == 100, message="100 accepted")
    assert redis_client.llen(names.INTAKE_QUEUE) == 0


def test_a_publish_the_replicas_asked_for_do_not_confirm_in_time_raises_and_says_to_publish_again(
    redis_url: str, redis_client: redis.Redis
) -> None:
    # The test Redis has no replica: WAIT answers 0 once its timeout passes.
    with (
        Producer(redis_url, replicas=1, replica_timeout_s=0.05) as producer,
        pytest.raises(PublishError, match="0 of the 1 replicas") as caught,
    ):
        producer.publish({"email": "a@example.com", "request_id": "waited-1"})

    assert "publish it again" in str(caught.value)
    assert redis_client.llen(names.INTAKE_QUEUE) == 1  # the primary has it; only its safety is unknown


@pytest.mark.integration
def test_the_message_the_producer_writes_is_a_standard_celery_task_message(
    redis_url: str, write_config: Callable[..., Path], start_worker: Callable[..., ManagedProcess]
) -> None:
    from producer.envelope import task_message
    from worker.app import app
    from worker.settings import load_settings, use_settings

    config = write_config()
    start_worker(config)
    use_settings(load_settings(config))
    task_id = "envelope-check-1"
    message = task_message("unsub.ping", [], task_id=task_id, queue=names.CONTROL_QUEUE, argsrepr="()")

    redis.Redis.from_url(redis_url).lpush(names.CONTROL_QUEUE, message)  # Celery's own consumer reads it

    assert app.AsyncResult(task_id).get(timeout=30) == "pong"
