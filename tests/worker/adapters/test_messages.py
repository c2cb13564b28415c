"""What an adapter writes for an operator: the provider's own words out of each error body shape."""

from __future__ import annotations

import json

import pytest

from worker.adapters.common import provider_words
from worker.adapters.http import MESSAGE_CHARS, scrubber


def words(body: object) -> str:
    text = body if isinstance(body, str) else json.dumps(body)
    return provider_words(text, scrubber("s3cret-value"))


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            [{"error_key": "partner.api.not_found", "error_message": "Account x1 was not found."}],
            "partner.api.not_found: Account x1 was not found.",
        ),
        (
            {"error": "invalid_client", "error_description": "Client authentication failed"},
            "invalid_client: Client authentication failed",
        ),
        ({"statusMessage": "Bad request"}, "Bad request"),
        (
            {"error": {"code": "RESOURCE_NOT_FOUND", "message": "Contact not found."}},
            "RESOURCE_NOT_FOUND: Contact not found.",
        ),
        ("FAILURE: 1 record(s) processed", "FAILURE: 1 record(s) processed"),
        ("", "empty body"),
    ],
)
def test_the_providers_words_come_from_its_error_fields_or_its_text(body: object, expected: str) -> None:
    assert words(body) == expected


def test_addresses_and_secrets_in_the_providers_words_are_redacted() -> None:
    said = words({"message": "jane.doe@example.com refused with key s3cret-value"})

    assert "jane.doe@example.com" not in said
    assert "s3cret-value" not in said
    assert "j***@example.com" in said


def test_a_long_answer_is_cut_to_a_message_length() -> None:
    said = words("x" * 5000)

    assert len(said) == MESSAGE_CHARS
    assert said.endswith("…")
