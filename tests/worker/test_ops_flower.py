"""A real `unsub flower` process: read-only with valid credentials, no cross-origin writes, and no clear
address on any task page or API answer, whoever published the task."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from celery import Celery
from kombu import Connection

from producer import names
from tests.support.waiting import wait_for
from unsub_dev.localstack.processes import ManagedProcess
from unsub_dev.localstack.redis_server import free_port

pytestmark = pytest.mark.integration

AUTH = ("ops", "flower-secret-pw")
#: Addresses a publisher outside the project sent in clear (its own argsrepr, a task that fails).
CLEAR = ("jane.doe@example.com", "victim@example.org")

FlowerFactory = Callable[..., str]


@pytest.fixture
def start_flower(
    tmp_path: Path, write_config: Callable[..., Path], redis_client: redis.Redis
) -> Iterator[FlowerFactory]:
    """Start `unsub flower` with the given settings (and flags); returns its base URL."""
    started: list[ManagedProcess] = []

    def start(*flags: str, **settings: Any) -> str:
        config = write_config(**settings)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = ManagedProcess(
            name="flower",
            args=["flower", "--config", str(config), "--port", str(port), *flags],
            log_path=tmp_path / f"flower-{port}.log",
            ready=lambda: _answers(f"{url}/healthcheck"),
        )
        started.append(proc)
        proc.start(ready_timeout_s=60)
        return url

    yield start
    for proc in started:
        proc.stop()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _get_json(url: str, **kwargs: Any) -> Any:
    try:
        response = httpx.get(url, auth=AUTH, timeout=5, **kwargs)
    except httpx.HTTPError:
        return None
    return response.json() if response.status_code == 200 else None


def _worker_name(url: str) -> str:
    workers = wait_for(
        lambda: _get_json(f"{url}/api/workers?refresh=1"), timeout_s=60, message="a worker in Flower"
    )
    return str(next(iter(workers)))


def _control_requests(worker: str, task_id: str) -> list[tuple[str, dict[str, Any]]]:
    """Every Flower endpoint that acts on the system, with arguments that would make it act."""
    publish = {"json": {"args": [[{"email": "victim@example.org", "connections": []}]]}}
    return [
        (f"/api/worker/shutdown/{worker}", {}),
        (f"/api/worker/pool/restart/{worker}", {}),
        (f"/api/worker/pool/grow/{worker}?n=1", {}),
        (f"/api/worker/pool/shrink/{worker}?n=1", {}),
        (f"/api/worker/pool/autoscale/{worker}?min=1&max=3", {}),
        (f"/api/worker/queue/add-consumer/{worker}?queue=stolen", {}),
        (f"/api/worker/queue/cancel-consumer/{worker}?queue={names.INTAKE_QUEUE}", {}),
        (f"/api/task/timeout/unsub.ping?workername={worker}&hard=1", {}),
        (f"/api/task/rate-limit/unsub.ping?workername={worker}&ratelimit=1/h", {}),
        (f"/api/task/revoke/{task_id}?terminate=true", {}),
        (f"/api/task/abort/{task_id}", {}),
        (f"/api/task/apply/{names.INTAKE_TASK}", publish),
        (f"/api/task/async-apply/{names.INTAKE_TASK}", publish),
        (f"/api/task/send-task/{names.INTAKE_TASK}", publish),
    ]


def test_flower_with_valid_credentials_refuses_every_control_and_publishing_endpoint(
    start_flower: FlowerFactory,
    write_config: Callable[..., Path],
    start_worker: Callable[..., ManagedProcess],
    redis_client: redis.Redis,
) -> None:
    worker = start_worker(write_config(), queues="intake")
    url = start_flower(flower_user=AUTH[0], flower_password=AUTH[1])
    name = _worker_name(url)
    same_origin = {"Origin": url}

    answers = {
        path: httpx.post(f"{url}{path}", auth=AUTH, headers=same_origin, timeout=10, **extra).status_code
        for path, extra in _control_requests(name, str(uuid.uuid4()))
    }

    assert answers == {path: 403 for path in answers}
    assert worker.running
    assert redis_client.llen(names.INTAKE_QUEUE) == 0  # nothing was published
    tasks = _get_json(f"{url}/api/tasks")
    assert tasks == {}
    assert "Shutdown" not in httpx.get(f"{url}/worker/{name}", auth=AUTH, timeout=10).text


def test_flower_refuses_writes_from_other_origins_even_local_and_with_control_allowed(
    start_flower: FlowerFactory, redis_client: redis.Redis
) -> None:
    url = start_flower("--insecure-local", flower_allow_control=True)
    publish = f"{url}/api/task/async-apply/unsub.ping"

    foreign = httpx.post(publish, headers={"Origin": "https://evil.example"}, json={}, timeout=10)
    scripted = httpx.post(publish, json={}, timeout=10)
    cross_site = httpx.post(
        publish, headers={"Origin": url, "Sec-Fetch-Site": "cross-site"}, json={}, timeout=10
    )
    read = httpx.get(f"{url}/api/workers", headers={"Origin": "https://evil.example"}, timeout=10)
    rebound = httpx.get(f"{url}/api/tasks", headers={"Host": "rebound.evil.example"}, timeout=10)
    own_page = httpx.post(publish, headers={"Origin": url}, json={}, timeout=10)

    assert (foreign.status_code, scripted.status_code, cross_site.status_code) == (403, 403, 403)
    assert redis_client.llen(names.CONTROL_QUEUE) == 1  # only the same-origin request published
    assert own_page.status_code == 200
    assert read.status_code == 200
    assert "access-control-allow-origin" not in read.headers
    assert rebound.status_code == 403  # a DNS-rebound page cannot read it either


def _publish_as_a_stranger(
    broker_url: str,
    task: str,
    args: list[Any],
    kwargs: dict[str, Any],
    *,
    argsrepr: str,
    kwargsrepr: str,
    queue: str = names.INTAKE_QUEUE,
) -> str:
    """A Celery message built by hand, as a publisher outside the project would (its argsrepr in clear)."""
    task_id = str(uuid.uuid4())
    headers = {
        "lang": "py", "task": task, "id": task_id, "root_id": task_id, "parent_id": None,
        "group": None, "retries": 0, "eta": None, "expires": None, "timelimit": [None, None],
        "argsrepr": argsrepr, "kwargsrepr": kwargsrepr, "origin": "billing-service@host",
    }  # fmt: skip
    embed = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
    with Connection(broker_url) as conn:
        conn.Producer().publish(
            [args, kwargs, embed],
            routing_key=queue,
            headers=headers,
            serializer="json",
        )
    return task_id


def _report_a_failed_task_as_a_stranger(broker_url: str, address: str) -> str:
    """Task events for a task that failed with an address in its exception, sent by hand as any
    client of the broker can (our workers refuse a task message with wrong arguments before it
    runs, so a real FAILURE with an address in it no longer comes from a stranger's message)."""
    task_id = str(uuid.uuid4())
    kwargs = repr({address: True})
    error = f"ping() got an unexpected keyword argument '{address}'"
    stranger = Celery(broker=broker_url)
    with stranger.connection_for_write() as conn:
        events = stranger.events.Dispatcher(conn, hostname="billing-service@host", enabled=True)
        events.send("task-received", uuid=task_id, name="unsub.ping", args="[]", kwargs=kwargs, retries=0)
        events.send("task-started", uuid=task_id)
        events.send(
            "task-failed",
            uuid=task_id,
            exception=f"TypeError({error!r})",
            traceback=f"Traceback (most recent call last):\n  ...\nTypeError: {error}\n",
        )
        events.close()
    return task_id


def _pages(url: str, task_ids: list[str], states: set[str]) -> dict[str, str]:
    """Every page and API answer that shows these tasks, once Flower has them in ``states``."""

    def finished() -> bool:
        tasks = _get_json(f"{url}/api/tasks") or {}
        return {t.get("state") for t in tasks.values()} == states

    wait_for(finished, timeout_s=60, message=f"tasks {states} in Flower")
    paths = ["/api/tasks", "/tasks"]
    for task_id in task_ids:
        paths += [f"/api/task/info/{task_id}", f"/task/{task_id}", f"/api/task/result/{task_id}"]
    pages = {path: httpx.get(f"{url}{path}", auth=AUTH, timeout=10).text for path in paths}
    table = {
        "draw": "1", "start": "0", "length": "15", "search[value]": "",
        "order[0][column]": "0", "order[0][dir]": "asc", "columns[0][data]": "name",
    }  # fmt: skip
    pages["/tasks/datatable"] = httpx.post(
        f"{url}/tasks/datatable", data=table, auth=AUTH, headers={"Origin": url}, timeout=10
    ).text
    return pages


def _leaks(pages: dict[str, str]) -> dict[str, list[str]]:
    return {path: [a for a in CLEAR if a in text.lower()] for path, text in pages.items()}


def test_flower_masks_the_addresses_a_non_python_publisher_sent_on_every_task_page_and_api(
    start_flower: FlowerFactory,
    write_config: Callable[..., Path],
    start_worker: Callable[..., ManagedProcess],
    redis_url: str,
) -> None:
    start_worker(write_config(), queues="intake")
    url = start_flower(flower_user=AUTH[0], flower_password=AUTH[1])
    _worker_name(url)
    args = [[{"email": CLEAR[0], "reason": "asked by phone"}]]
    accepted = _publish_as_a_stranger(
        redis_url, names.INTAKE_TASK, args, {}, argsrepr=json.dumps(args), kwargsrepr="{}"
    )

    pages = _pages(url, [accepted], {"SUCCESS"})

    assert _leaks(pages) == {path: [] for path in pages}
    assert "j***@example.com" in json.loads(pages[f"/api/task/info/{accepted}"])["args"]
    assert "j***@example.com" in pages[f"/task/{accepted}"]


def test_flower_masks_addresses_in_python_reprs_and_in_the_exception_of_a_failed_task(
    start_flower: FlowerFactory,
    write_config: Callable[..., Path],
    start_worker: Callable[..., ManagedProcess],
    redis_url: str,
) -> None:
    start_worker(write_config(), queues="intake")
    url = start_flower(flower_user=AUTH[0], flower_password=AUTH[1])
    _worker_name(url)
    args = [[{"email": CLEAR[0], "reason": "asked by phone"}]]
    accepted = _publish_as_a_stranger(
        redis_url, names.INTAKE_TASK, args, {}, argsrepr=repr(args), kwargsrepr="{}"
    )
    failed = _report_a_failed_task_as_a_stranger(redis_url, CLEAR[1])

    pages = _pages(url, [accepted, failed], {"SUCCESS", "FAILURE"})

    assert _leaks(pages) == {path: [] for path in pages}
    info = json.loads(pages[f"/api/task/info/{failed}"])
    assert "v***@example.org" in info["exception"]
    assert "v***@example.org" in info["traceback"]
    assert "j***@example.com" in pages[f"/task/{accepted}"]
