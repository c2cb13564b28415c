"""Message contract v1: the model, its committed JSON Schema, and the errors publishers see."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from producer.contract import json_schema, json_schema_text, normalize_email, parse_request
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


def test_emails_are_lower_cased() -> None:
    assert parse_request({"email": "Jane.Doe@Example.COM"}).email == "jane.doe@example.com"


def test_an_email_with_spaces_around_it_is_refused_not_trimmed() -> None:
    with pytest.raises(InvalidRequestError, match=r"^email:"):
        parse_request({"email": "  jane@example.com "})


def test_an_operators_lookup_address_is_trimmed_unlike_a_requests() -> None:
    assert normalize_email("  Jane@Example.com ") == "jane@example.com"


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
        (
            {"email": "a@example.com", "scope": "list", "targets": {"wc": {"list_ids": ["0"]}}},
            "targets.wc.list_ids.0",
        ),
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
    with pytest.raises(InvalidRequestError, match="message: expected a JSON object, got array"):
        parse_request("[1, 2]")
    with pytest.raises(InvalidRequestError, match="message: not valid JSON"):
        parse_request(b"{not json")


def test_json_text_goes_through_the_strict_decoder_so_duplicate_keys_are_refused() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        parse_request(b'{"email": "a@example.com", "scope": "list", "scope": "global"}')

    assert caught.value.problems == ["message: an object has the same key twice"]


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


# -- strict types: what pydantic's lax mode used to turn into something else ----------------------


def problems_of(message: dict[str, Any]) -> list[str]:
    with pytest.raises(InvalidRequestError) as caught:
        parse_request({"email": "a@example.com", **message})
    return caught.value.problems


@pytest.mark.parametrize("lax", ["yes", "1", "on", "true", 1, 1.0, 0, None])
def test_all_accounts_takes_only_a_json_boolean(lax: object) -> None:
    problems = problems_of({"targets": {"cc": {"all_accounts": lax}}})

    assert problems == ["targets.cc.all_accounts: Input should be a valid boolean"]


@pytest.mark.parametrize("version", [True, 1.0, "1", 2, 0, None, 10**30])
def test_version_is_the_integer_1_and_nothing_equal_to_it(version: object) -> None:
    assert [p.split(":")[0] for p in problems_of({"version": version})] == ["version"]


@pytest.mark.parametrize("when", [1_700_000_000, 1.7e9, "1700000000", "2026-11-22T09:15:00", "2026-11-22"])
def test_requested_at_is_an_rfc3339_string_with_a_time_zone_never_an_epoch(when: object) -> None:
    [problem] = problems_of({"requested_at": when})

    assert problem.startswith("requested_at:")


#: RFC 3339 allows some (lower-case t/z, a space, leap seconds); the contract's subset does not.
OFF_SUBSET = [
    "2026-11-22t09:15:00z",
    "2026-11-22 09:15:00Z",
    "2026-02-30T00:00:00Z",
    "2026-11-22T23:59:60Z",
    "2026-11-22T09:15:00.1234567Z",
    "0999-01-01T00:00:00Z",
    "2026-11-22T09:15:00+24:00",
]


@pytest.mark.parametrize("when", OFF_SUBSET)
def test_requested_at_outside_the_rfc3339_subset_is_refused(when: str) -> None:
    assert problems_of({"requested_at": when})[0].startswith("requested_at:")


def test_requested_at_keeps_its_time_zone_and_fraction() -> None:
    request = parse_request({"email": "a@example.com", "requested_at": "2026-11-22T09:15:00.25+05:30"})

    assert request.requested_at.isoformat() == "2026-11-22T09:15:00.250000+05:30"


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ({"reason": "phoned\r\nBcc: x"}, "reason"),
        ({"reason": "tab\there"}, "reason"),
        ({"reason": "del\x7f"}, "reason"),
        ({"customer_key": "11\x00293"}, "customer_key"),
        ({"scope": "list", "targets": {"ins": {"group": "news\r\n"}}}, "targets.ins.group"),
        ({"targets": {"wc": {"customer_key": "k\x1b"}}}, "targets.wc.customer_key"),
        ({"request_id": "crm:42\n"}, "request_id"),
        ({"connections": ["wc\n"]}, "connections.0"),
        ({"targets": {"wc": {"contact_id": "abc\x00"}}}, "targets.wc.contact_id"),
        ({"scope": "list", "targets": {"wc": {"list_ids": ["5\n"]}}}, "targets.wc.list_ids.0"),
        ({"email": "a@example.com\n"}, "email"),
    ],
)
def test_control_characters_are_refused_in_every_text_field(message: dict[str, Any], field: str) -> None:
    assert [p.split(":")[0] for p in problems_of(message)] == [field]


@pytest.mark.parametrize("group", [" news", "news ", "news\u00a0", "\u3000news", "new\u2028"])
def test_a_group_with_whitespace_at_either_end_is_refused(group: str) -> None:
    problems = problems_of({"scope": "list", "targets": {"ins": {"group": group}}})

    assert problems[0].startswith("targets.ins.group:")


def test_a_group_may_hold_spaces_inside() -> None:
    request = parse_request(
        {"email": "a@example.com", "scope": "list", "targets": {"ins": {"group": "weekly digest"}}}
    )

    assert request.targets["ins"].group == "weekly digest"


@pytest.mark.parametrize("key", [" 11293", "11293 ", "1,2", "1^2"])
def test_a_customer_key_with_surrounding_whitespace_or_a_separator_is_refused(key: str) -> None:
    assert problems_of({"customer_key": key})[0].startswith("customer_key:")


@pytest.mark.parametrize("list_id", ["0", "00", "05", "-0", "-5", "0_", "+5", " 5", "5 ", "5.0", "1e3", "abc",
                                     "1" * 19, "\u0665", "\uff15", ""])  # fmt: skip
def test_list_ids_are_canonical_positive_integers(list_id: str) -> None:
    problems = problems_of({"scope": "list", "targets": {"wc": {"list_ids": [list_id]}}})

    assert problems[0].startswith("targets.wc.list_ids.0:")


@pytest.mark.parametrize("list_id", ["1", "5", "10", "9" * 18])
def test_canonical_list_ids_are_accepted(list_id: str) -> None:
    request = parse_request(
        {"email": "a@example.com", "scope": "list", "targets": {"wc": {"list_ids": [list_id]}}}
    )

    assert request.targets["wc"].list_ids == [list_id]


# -- no widening: scope decides what a target may name ---------------------------------------------


@pytest.mark.parametrize("scope", [{}, {"scope": "global"}], ids=["scope left out", "scope global"])
@pytest.mark.parametrize(
    ("target", "field"), [({"list_ids": ["5"]}, "list_ids"), ({"group": "newsletter"}, "group")]
)
def test_lists_or_groups_with_a_global_scope_are_refused_and_the_problem_says_set_scope_to_list(
    scope: dict[str, str], target: dict[str, object], field: str
) -> None:
    problems = problems_of({**scope, "targets": {"wc": target}})

    assert len(problems) == 1
    assert problems[0].startswith(f"targets.wc.{field}:")
    assert "set scope to list" in problems[0]


def test_empty_lists_and_a_null_group_are_not_lists_so_a_global_request_may_carry_them() -> None:
    request = parse_request({"email": "a@example.com", "targets": {"wc": {"list_ids": [], "group": None}}})

    assert request.scope == "global"


def test_all_accounts_with_scope_list_is_refused() -> None:
    problems = problems_of({"scope": "list", "targets": {"cc": {"all_accounts": True}}})

    assert problems == ["targets.cc.all_accounts: unsubscribes from every account, wider than scope list"]


def test_all_accounts_with_scope_global_and_lists_with_scope_list_are_accepted() -> None:
    wide = parse_request({"email": "a@example.com", "targets": {"cc": {"all_accounts": True}}})
    narrow = parse_request(
        {
            "email": "a@example.com",
            "scope": "list",
            "targets": {"wc": {"list_ids": ["5"]}, "ins": {"group": "news"}},
        }
    )

    assert wide.targets["cc"].all_accounts
    assert narrow.targets["wc"].list_ids == ["5"]


def test_python_callers_pass_lists_not_tuples_as_json_would() -> None:
    assert problems_of({"connections": ("wc",)})[0].startswith("connections:")
