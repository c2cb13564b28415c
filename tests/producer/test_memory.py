"""The in-memory fake: same validation and chunking as the real producer, messages recorded."""

from __future__ import annotations

import pytest

from producer import InvalidRequestError, MemoryProducer, PublishError, mask_email, names


def test_the_fake_records_each_task_message_with_masked_arguments() -> None:
    fake = MemoryProducer(chunk_size=2)

    ids = fake.publish_many([{"email": f"u{i}@example.com", "request_id": f"r{i}"} for i in range(3)])

    assert ids == ["r0", "r1", "r2"]
    assert [len(m.payload) for m in fake.messages] == [2, 1]
    assert {(m.task, m.queue) for m in fake.messages} == {(names.INTAKE_TASK, names.INTAKE_QUEUE)}
    assert [r["email"] for r in fake.requests] == ["u0@example.com", "u1@example.com", "u2@example.com"]
    assert "u***@example.com" in fake.messages[0].argsrepr
    assert "u0@" not in fake.messages[0].argsrepr


def test_the_fake_refuses_invalid_requests_like_the_real_one() -> None:
    fake = MemoryProducer()

    with pytest.raises(InvalidRequestError, match="email"):
        fake.publish({"email": "nope"})
    assert fake.messages == []


def test_the_fake_can_play_a_broker_outage() -> None:
    with MemoryProducer() as fake:
        fake.broker_down = True
        with pytest.raises(PublishError):
            fake.publish({"email": "a@example.com"})
    assert fake.closed


@pytest.mark.parametrize(
    ("address", "masked"),
    [("jane.doe@example.com", "j***@example.com"), ("x@y.z", "x***@y.z"), ("nope", "***"), ("@a.b", "***")],
)
def test_addresses_are_masked_to_first_letter_and_domain(address: str, masked: str) -> None:
    assert mask_email(address) == masked
