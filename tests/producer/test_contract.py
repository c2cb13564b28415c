"""Message contract v1: the model, its committed JSON Schema, and the errors publishers see."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from producer.contract import json_schema, json_schema_text, parse_request
from producer.errors import InvalidRequestError

SCHEMA_FILE = Path(__file__).parents[2] / "producer" / "schema" / "unsubscribe-request.v1.json"


def test_the_committed_json_schema_matches_the_model() -> None:
    assert SCHEMA_FILE.read_text(encoding="utf-8") == json_schema_text(), (
        "schema drifted: run `python -m producer.contract > producer/schema/unsubscribe-request.v1.json`"
    )


def test_a_minimal_request_gets_an_id_a_time_and_defaults() -> None:
    request = parse_request({"email": "jane@example.com"})

    assert request.request_id
    assert request.scope == "global"
    assert request.source == "Contact"
    assert request.connections is None
    assert request.requested_at.tzinfo is not None


def test_emails_are_trimmed_and_lower_cased() -> None:
    assert parse_request({"email": "  Jane.Doe@Example.COM "}).email == "jane.doe@example.com"


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ({"email": "not-an-address"}, "email"),
        ({"email": "a@example.com", "scope": "everything"}, "scope"),
        ({"email": "a@example.com", "source": "Robot"}, "source"),
        ({"email": "a@example.com", "connections": ["Bad Name"]}, "connections.0"),
        ({"email": "a@example.com", "requested_at": "2026-01-01T00:00:00"}, "requested_at"),
        ({"email": "a@example.com", "reason": "x" * 1001}, "reason"),
        ({"email": "a@example.com", "customer_key": "a^b"}, "customer_key"),
        ({"email": "a@example.com", "targets": {"wc": {"list_ids": ["0"]}}}, "targets.wc.list_ids"),
        ({"email": "a@example.com", "emial": "typo"}, "emial"),
        ({}, "email"),
    ],
)
def test_a_bad_field_yields_an_error_that_names_it(message: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        parse_request(message)

    assert any(problem.startswith(f"{field}:") for problem in caught.value.problems), caught.value.problems


def test_errors_never_echo_the_address() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        parse_request({"email": "jane.doe@@example.com", "scope": "x"})

    assert "jane.doe" not in str(caught.value)


def test_targets_must_name_targeted_connections() -> None:
    with pytest.raises(InvalidRequestError, match="not in 'connections'"):
        parse_request({"email": "a@example.com", "connections": ["a"], "targets": {"b": {"group": "news"}}})


def test_json_text_and_non_objects_are_handled() -> None:
    assert parse_request('{"email": "a@example.com"}').email == "a@example.com"
    with pytest.raises(InvalidRequestError, match="message"):
        parse_request("[1, 2]")
    with pytest.raises(InvalidRequestError, match="message"):
        parse_request(b"{not json")


def test_a_valid_request_validates_against_the_committed_schema() -> None:
    request = parse_request(
        {
            "email": "jane@example.com",
            "scope": "list",
            "connections": ["wc-main", "insider"],
            "targets": {
                "wc-main": {"list_ids": ["5", "9"], "customer_key": "11293"},
                "insider": {"group": "weekly"},
            },
            "reason": "Lost interest",
            "source": "Account",
        }
    )
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))

    jsonschema.validate(json.loads(request.model_dump_json()), schema)


@given(st.dictionaries(st.text(max_size=12), st.one_of(st.none(), st.integers(), st.text(max_size=30))))
def test_arbitrary_objects_are_accepted_or_rejected_with_named_fields(message: dict[str, object]) -> None:
    try:
        parse_request(message)
    except InvalidRequestError as exc:
        assert exc.problems
        assert all(":" in problem for problem in exc.problems)


def test_the_schema_carries_an_id_and_the_draft() -> None:
    schema = json_schema()

    assert schema["$schema"].endswith("2020-12/schema")
    assert schema["$id"].endswith("unsubscribe-request.v1.json")
    assert "email" in schema["required"]
