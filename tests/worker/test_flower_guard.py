"""The Flower guard's pieces, one at a time: the gate, the origin check and the redaction hooks.

A real Flower process is tested in tests/worker/test_ops_flower.py.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from worker.flower_guard import (
    RedactedTaskResult,
    RedactingInspector,
    redact_task_event,
    refusal,
    same_origin,
)

HOST = "flower.internal:5555"
HERE = {"Origin": f"http://{HOST}"}

CONTROL_PATHS = [
    "/api/worker/shutdown/w1@pod",
    "/api/worker/pool/restart/w1@pod",
    "/api/worker/pool/grow/w1@pod",
    "/api/worker/pool/shrink/w1@pod",
    "/api/worker/pool/autoscale/w1@pod",
    "/api/worker/queue/add-consumer/w1@pod",
    "/api/worker/queue/cancel-consumer/w1@pod",
    "/api/task/apply/unsub.intake",
    "/api/task/async-apply/unsub.intake",
    "/api/task/send-task/unsub.intake",
    "/api/task/abort/0b1c",
    "/api/task/timeout/unsub.deliver",
    "/api/task/rate-limit/unsub.deliver",
    "/api/task/revoke/0b1c",
    "/flower/api/task/revoke/0b1c",  # under a URL prefix too
]


@pytest.mark.parametrize("path", CONTROL_PATHS)
def test_every_control_and_publishing_endpoint_is_refused_from_the_same_origin(path: str) -> None:
    assert refusal("POST", path, HERE, HOST, allow_control=False) is not None
    assert refusal("GET", path, HERE, HOST, allow_control=False) is not None


@pytest.mark.parametrize("path", CONTROL_PATHS)
def test_control_is_allowed_only_when_the_setting_says_so_and_only_from_the_same_origin(path: str) -> None:
    allowed = refusal("POST", path, HERE, HOST, allow_control=True)
    elsewhere = refusal("POST", path, {"Origin": "https://evil.example"}, HOST, allow_control=True)

    assert allowed is None
    assert elsewhere is not None


@pytest.mark.parametrize(
    "headers",
    [
        {},  # a script: no Origin, no Referer
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Origin": f"http://{HOST}.evil.example"},
        {"Referer": "https://evil.example/page"},
        {"Origin": "https://evil.example", "Referer": f"http://{HOST}/tasks"},
        {"Sec-Fetch-Site": "cross-site", "Origin": f"http://{HOST}"},
        {"Sec-Fetch-Site": "same-site", "Origin": f"http://{HOST}"},
    ],
)
def test_a_write_not_known_to_come_from_this_server_is_refused(headers: dict[str, str]) -> None:
    assert same_origin(headers, HOST) is False
    assert refusal("POST", "/tasks/datatable", headers, HOST, allow_control=True) is not None


def test_the_tasks_table_query_is_the_one_write_a_read_only_flower_accepts_from_its_own_pages() -> None:
    from_page = {"Referer": f"http://{HOST}/tasks", "Sec-Fetch-Site": "same-origin"}

    table = refusal("POST", "/tasks/datatable", from_page, HOST, allow_control=False)
    other = refusal("POST", "/api/workers", from_page, HOST, allow_control=False)
    delete = refusal("DELETE", "/tasks/datatable", {}, HOST, allow_control=False)

    assert table is None
    assert other is not None
    assert delete is not None


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS", "get"])
def test_reads_pass_the_gate_whatever_their_origin(method: str) -> None:
    assert (
        refusal(method, "/api/tasks", {"Origin": "https://evil.example"}, HOST, allow_control=False) is None
    )


def test_a_task_event_has_its_data_redacted_and_its_bookkeeping_kept() -> None:
    event = {
        "type": "task-failed",
        "uuid": "0b1c",
        "hostname": "w1@pod",
        "name": "unsub.intake",
        "args": '[{"email": "jane.doe@example.com"}]',
        "kwargs": {"password": "hunter2-secret"},
        "exception": 'ValueError("no contact jane.doe@example.com")',
        "traceback": 'Traceback ...\n  send(url="https://h/api?p=wc-SUPERSECRET")',
        "result": None,
    }

    shown = redact_task_event(event)

    assert shown["args"] == '[{"email": "j***@example.com"}]'
    assert shown["kwargs"] == {"password": "[REDACTED]"}
    assert "jane.doe" not in shown["exception"]
    assert "SUPERSECRET" not in shown["traceback"]
    assert {k: shown[k] for k in ("type", "uuid", "hostname", "name", "result")} == {
        k: event[k] for k in ("type", "uuid", "hostname", "name", "result")
    }


def test_worker_inspection_replies_are_redacted_before_flower_keeps_them() -> None:
    inspector = RedactingInspector(io_loop=None, capp=None, timeout=1.0)
    reserved: list[dict[str, Any]] = [
        {"id": "0b1c", "name": "unsub.intake", "args": [[{"email": "jane.doe@example.com"}]], "kwargs": {}}
    ]

    inspector._on_update("w1@pod", "reserved", reserved)

    kept = inspector.workers["w1@pod"]["reserved"]
    assert kept[0]["args"] == [[{"email": "j***@example.com"}]]
    assert kept[0]["name"] == "unsub.intake"


def test_a_failed_tasks_result_read_from_the_backend_is_redacted() -> None:
    handler = RedactedTaskResult.__new__(RedactedTaskResult)  # only its result formatting is used
    failed = SimpleNamespace(
        state="FAILURE",
        result=LookupError("no contact jane.doe@example.com"),
        traceback="Traceback (most recent call last):\nLookupError: no contact jane.doe@example.com",
    )
    response: dict[str, Any] = {"task-id": "0b1c", "state": "FAILURE"}

    handler.update_response_result(response, failed)

    assert "jane.doe" not in json.dumps(response)
    assert "j***@example.com" in response["result"]
    assert response["traceback"].endswith("LookupError: no contact j***@example.com")


@pytest.mark.parametrize("host", ["127.0.0.1:5555", "localhost:5555", "[::1]:5555", "LOCALHOST:5555"])
def test_a_local_only_flower_answers_requests_for_loopback_names(host: str) -> None:
    assert refusal("GET", "/api/tasks", {}, host, allow_control=False, local_only=True) is None


@pytest.mark.parametrize("host", ["rebound.evil.example:5555", "10.0.0.5:5555", "127.0.0.1.evil.example"])
def test_a_local_only_flower_refuses_even_reads_addressed_to_another_host(host: str) -> None:
    assert refusal("GET", "/api/tasks", {}, host, allow_control=False, local_only=True) is not None
