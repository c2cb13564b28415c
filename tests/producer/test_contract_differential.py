"""The worker accepts exactly what the committed JSON Schema accepts: a differential property test.

Valid requests are mutated the way a careless or hostile publisher would (lax booleans and numbers,
version variants, control characters, whitespace, scope and target combinations, list id variants,
wrong types, extra keys, big numbers, lengths at their limits), written as JSON, and given to both
judges: ``decode_json`` + ``parse_request`` (what every door runs) and
``jsonschema.Draft202012Validator`` on the committed schema with its formats asserted (``email``
with email-validator, as the schema documents; ``date-time`` with RFC 3339). They must agree.

The deliberate exceptions, which JSON Schema cannot express, are named in ``beyond_schema`` and in
the schema's own ``$comment``: ``version: 1.0`` (JSON Schema counts it equal to 1), a target for a
connection not in ``connections``, and duplicate keys (which ``json.loads`` drops before a schema
validator sees them; tested on their own below).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, FormatChecker

from producer.contract import parse_request
from producer.errors import InvalidRequestError
from producer.strictjson import decode_json

SCHEMA_FILE = Path(__file__).parents[2] / "producer" / "schema" / "unsubscribe-request.v1.json"

Doc = dict[str, Any]


def _email_format(value: object) -> bool:
    if not isinstance(value, str):
        return True
    validate_email(value, check_deliverability=False, allow_display_name=False)
    return True


FORMATS = FormatChecker()
FORMATS.checks("email", raises=EmailNotValidError)(_email_format)
VALIDATOR = Draft202012Validator(json.loads(SCHEMA_FILE.read_text(encoding="utf-8")), format_checker=FORMATS)


def schema_accepts(doc: object) -> bool:
    return bool(VALIDATOR.is_valid(doc))


def beyond_schema(doc: object) -> bool:
    """What the contract refuses although the schema cannot say so (documented in the schema)."""
    if not isinstance(doc, dict):
        return False
    version_float = isinstance(doc.get("version"), float)
    names, targets = doc.get("connections"), doc.get("targets")
    stray = isinstance(names, list) and isinstance(targets, dict) and not set(targets) <= set(names)
    return version_float or stray


def contract_accepts(text: str) -> bool:
    try:
        parse_request(decode_json(text))
    except InvalidRequestError:
        return False
    return True


# -- valid requests -------------------------------------------------------------------------------

NAMES = ["wc", "ins", "cc-partner", "easy_1", "x"]
EMAILS = [
    "jane@example.com",
    "Jane.Doe@Example.COM",
    "jöhn.döe@exämple.com",
    "a+tag@sub.example.org",
    "b@x.io",
]
#: Free text without control characters or surrogates.
plain_text = st.text(st.characters(exclude_categories=["Cs", "Cc"]), max_size=40)


@st.composite
def targets_for(draw: st.DrawFn, names: list[str], scope: str) -> dict[str, Doc]:
    targets: dict[str, Doc] = {}
    for name in draw(st.lists(st.sampled_from(names), unique=True, max_size=len(names))):
        target: Doc = {}
        if scope == "list" and draw(st.booleans()):
            target["list_ids"] = draw(
                st.lists(st.sampled_from(["5", "7", "10", "9" * 18]), unique=True, max_size=3)
            )
        if scope == "list" and draw(st.booleans()):
            target["group"] = draw(st.sampled_from(["newsletter", "abc", "weekly digest", "ü" * 29]))
        if scope != "list" and draw(st.booleans()):
            target["all_accounts"] = draw(st.booleans())
        if draw(st.booleans()):
            target["customer_key"] = draw(st.sampled_from(["11293", "ck 7", "k"]))
        if draw(st.booleans()):
            target["contact_id"] = draw(st.sampled_from(["6fa459ea-ee8a-3ca4-894e-db77e160355e", "42"]))
        targets[name] = target
    return targets


@st.composite
def valid_requests(draw: st.DrawFn) -> Doc:
    doc: Doc = {"email": draw(st.sampled_from(EMAILS))}
    scope = draw(st.sampled_from([None, "global", "list"]))
    if scope is not None:
        doc["scope"] = scope
    names = NAMES
    if draw(st.booleans()):
        names = draw(st.lists(st.sampled_from(NAMES), unique=True, min_size=1))
        doc["connections"] = names
    if targets := draw(targets_for(names, scope or "global")):
        doc["targets"] = targets
    optional = {
        "version": st.just(1),
        "request_id": st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,20}", fullmatch=True),
        "customer_key": st.sampled_from(["11293", "a b"]),
        "reason": plain_text,
        "source": st.sampled_from(["Contact", "Account", "System"]),
        "requested_at": st.sampled_from(["2026-11-22T09:15:00Z", "1999-12-31T23:59:59.123456-08:00"]),
    }
    for key, values in optional.items():
        if draw(st.booleans()):
            doc[key] = draw(values)
    return doc


# -- mutations ------------------------------------------------------------------------------------

CONTROLS = [chr(c) for c in range(0x20)] + ["\x7f"]
SPACES = [" ", "\u00a0", "\u2003", "\u3000", "\u2028", "\u0085", "\ufeff"]
LAX_BOOLEANS = ["yes", "no", "1", "0", "on", "off", "true", "false", "True", 1, 0, 1.0, 0.0, None, [], {}]
VERSIONS = [True, False, 1.0, 1.5, "1", 0, 2, -1, None, 10**30, 10**60, [1], {"v": 1}]
LIST_IDS = [
    "00",
    "-0",
    "0_",
    "0",
    "05",
    "+5",
    " 5",
    "5 ",
    "5.0",
    "1e3",
    "\u0665",
    "\uff15",
    "",
    "1" * 19,
    5,
    5.0,
]
WRONG_TYPES = [None, True, 0, -7, 1.5, 1e308, 10**40, "", "x", [], ["x"], {}, {"a": 1}]
TIMES = ["2026-11-22T09:15:00", "2026-11-22t09:15:00z", "2026-11-22 09:15:00Z", "2026-02-29T00:00:00Z",
         "2028-02-29T00:00:00Z", "2026-11-22T23:59:60Z", "2026-11-22T09:15:00.1234567Z", "2026-11-22",
         "1700000000", 1_700_000_000, 1.7e9, "0999-01-01T00:00:00Z", "2026-11-22T09:15:00+24:00",
         "2026-11-22T09:15:00-00:00", "\uff12\uff10\uff12\uff16-11-22T09:15:00Z"]  # fmt: skip
TOP_FIELDS = ["version", "request_id", "email", "scope", "connections", "targets", "customer_key", "reason",
              "source", "requested_at"]  # fmt: skip
TARGET_FIELDS = ["list_ids", "group", "all_accounts", "customer_key", "contact_id"]
LIMITS = {"reason": 1000, "customer_key": 255, "group": 29, "request_id": 128, "email": 254}

values = st.one_of(
    st.sampled_from(LAX_BOOLEANS),
    st.sampled_from(VERSIONS),
    st.sampled_from(LIST_IDS),
    st.sampled_from(WRONG_TYPES),
    st.sampled_from(TIMES),
    st.sampled_from(["global", "list", "Global", "LIST", "Contact", "contact", "Robot"]),
    st.integers(min_value=-(10**50), max_value=10**50),
    st.floats(allow_nan=False, allow_infinity=False),
    plain_text,
)


def _strings(doc: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths to every string value (and every targets key, as ``(..., KEY)``) in a request."""
    found: list[tuple[Any, ...]] = []
    if isinstance(doc, str):
        return [path]
    if isinstance(doc, dict):
        for key, value in doc.items():
            if path == ("targets",):
                found.append((*path, key, KEY))
            found += _strings(value, (*path, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            found += _strings(value, (*path, i))
    return found


KEY = object()  #: path marker: the targets key itself, not its value


def _edit(doc: Doc, path: tuple[Any, ...], change: Any) -> Doc:
    doc = copy.deepcopy(doc)
    *parents, last = path
    holder: Any = doc
    for part in parents[:-1] if last is KEY else parents:
        holder = holder[part]
    if last is KEY:
        old = parents[-1]
        holder[change(old)] = holder.pop(old)
    else:
        holder[last] = change(holder[last])
    return doc


@st.composite
def insert_character(draw: st.DrawFn, doc: Doc) -> Doc:
    paths = _strings(doc)
    path = draw(st.sampled_from(paths))
    char = draw(st.sampled_from(CONTROLS + SPACES))
    where = draw(st.sampled_from(["start", "middle", "end"]))

    def change(text: str) -> str:
        cut = {"start": 0, "middle": len(text) // 2, "end": len(text)}[where]
        return text[:cut] + char + text[cut:]

    return _edit(doc, path, change)


@st.composite
def set_field(draw: st.DrawFn, doc: Doc) -> Doc:
    doc = copy.deepcopy(doc)
    targets = doc.get("targets")
    if isinstance(targets, dict) and targets and draw(st.booleans()):
        target = targets[draw(st.sampled_from(sorted(targets)))]
        target[draw(st.sampled_from([*TARGET_FIELDS, "emial"]))] = draw(values)
    else:
        doc[draw(st.sampled_from([*TOP_FIELDS, "emial", "list_ids"]))] = draw(values)
    return doc


@st.composite
def drop_field(draw: st.DrawFn, doc: Doc) -> Doc:
    doc = copy.deepcopy(doc)
    del doc[draw(st.sampled_from(sorted(doc)))]
    return doc


def _names(doc: Doc) -> list[str]:
    """The request's connection names, when they are still a list of names (else some others)."""
    names = doc.get("connections")
    ok = isinstance(names, list) and names and all(isinstance(n, str) for n in names)
    return names if ok else NAMES  # type: ignore[return-value]


@st.composite
def reshape_scope(draw: st.DrawFn, doc: Doc) -> Doc:
    """Scope against what the targets name: lists, groups or every account, with any scope."""
    doc = copy.deepcopy(doc)
    scope = draw(st.sampled_from([None, "global", "list"]))
    doc.pop("scope", None)
    if scope is not None:
        doc["scope"] = scope
    name = draw(st.sampled_from(_names(doc)))
    field, value = draw(
        st.sampled_from(
            [("list_ids", ["5"]), ("list_ids", []), ("group", "newsletter"), ("group", None),
             ("all_accounts", True), ("all_accounts", False)]
        )
    )  # fmt: skip
    targets = doc.get("targets") if isinstance(doc.get("targets"), dict) else {}
    target = targets.get(name) if isinstance(targets.get(name), dict) else {}
    doc["targets"] = {**targets, name: {**target, field: value}}
    return doc


@st.composite
def list_variants(draw: st.DrawFn, doc: Doc) -> Doc:
    doc = copy.deepcopy(doc)
    doc["scope"] = "list"
    name = draw(st.sampled_from(_names(doc)))
    ids = draw(st.lists(st.sampled_from([*LIST_IDS, "5", "7"]), min_size=1, max_size=3))
    doc["targets"] = {name: {"list_ids": ids}}
    return doc


@st.composite
def at_the_limit(draw: st.DrawFn, doc: Doc) -> Doc:
    doc = copy.deepcopy(doc)
    field = draw(st.sampled_from(sorted(LIMITS)))
    size = LIMITS[field] + draw(st.sampled_from([-1, 0, 1]))
    if field == "email":
        doc["email"] = "a" * 60 + "@" + "b" * 60 + "." + "c" * (size - 122)
    elif field == "group":
        doc["scope"] = "list"
        doc["targets"] = {"ins": {"group": "g" * size}}
    else:
        doc[field] = "r" * size
    return doc


@st.composite
def many_items(draw: st.DrawFn, doc: Doc) -> Doc:
    """Connections or list ids by the dozen, around their limits, perhaps with one repeated."""
    doc = copy.deepcopy(doc)
    count = draw(st.sampled_from([1, 49, 50, 51, 99, 100, 101]))
    if draw(st.booleans()):
        items = doc["connections"] = [f"c{i}" for i in range(count)]
        doc.pop("targets", None)
    else:
        items = [str(i + 1) for i in range(count)]
        doc["scope"] = "list"
        doc["targets"] = {"wc": {"list_ids": items}}
    if draw(st.booleans()):
        items[-1] = items[0]
    return doc


MUTATIONS = [insert_character, set_field, drop_field, reshape_scope, list_variants, at_the_limit, many_items]


@st.composite
def mutated_requests(draw: st.DrawFn) -> Doc:
    doc = draw(valid_requests())
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        mutation = draw(st.sampled_from(MUTATIONS))
        if mutation is insert_character and not _strings(doc):
            continue
        if mutation is drop_field and not doc:
            continue
        doc = draw(mutation(doc))
    return doc


# -- the properties -------------------------------------------------------------------------------


def test_the_schema_asserts_email_with_email_validator_and_date_time_with_rfc3339() -> None:
    assert {"email", "date-time"} <= set(FORMATS.checkers)
    assert not schema_accepts({"email": "not an address@example.com"})
    assert not schema_accepts({"email": "a@example.com", "requested_at": "2026-02-30T00:00:00Z"})


@settings(max_examples=200, deadline=None)
@given(valid_requests(), st.booleans())
def test_every_unmutated_request_is_accepted_by_both(doc: Doc, ascii_only: bool) -> None:
    text = json.dumps(doc, ensure_ascii=ascii_only)

    accepted = contract_accepts(text)

    assert schema_accepts(doc)
    assert accepted, doc


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_requests(), st.booleans())
def test_the_contract_accepts_exactly_what_the_committed_schema_accepts(doc: Doc, ascii_only: bool) -> None:
    text = json.dumps(doc, ensure_ascii=ascii_only)
    expected = schema_accepts(doc) and not beyond_schema(doc)

    accepted = contract_accepts(text)

    assert accepted == expected, doc


@pytest.mark.parametrize(
    "text",
    [
        '{"email": "a@example.com", "scope": "list", "scope": "global"}',
        '{"email": "a@example.com", "targets": {"cc": {"all_accounts": false, "all_accounts": true}}}',
        '{"email": "a@example.com", "scope": "list", "targets": {"wc": {}, "wc": {"list_ids": ["5"]}}}',
    ],
    ids=["top level", "in a target", "a target twice"],
)
def test_duplicate_keys_are_refused_although_the_schema_never_sees_them(text: str) -> None:
    assert schema_accepts(json.loads(text))  # json.loads keeps the last value: the exception
    assert not contract_accepts(text)


def test_version_1_0_is_refused_although_json_schema_counts_it_equal_to_1() -> None:
    doc = {"email": "a@example.com", "version": 1.0}

    assert schema_accepts(doc)
    assert not contract_accepts(json.dumps(doc))


def test_a_target_outside_connections_is_refused_although_the_schema_cannot_say_so() -> None:
    doc = {"email": "a@example.com", "connections": ["wc"], "targets": {"ins": {}}}

    assert schema_accepts(doc)
    assert not contract_accepts(json.dumps(doc))


ISSUE_12 = [
    {"targets": {"cc": {"all_accounts": "yes"}}},
    {"targets": {"cc": {"all_accounts": "1"}}},
    {"targets": {"cc": {"all_accounts": "on"}}},
    {"targets": {"cc": {"all_accounts": 1.0}}},
    {"version": True},
    {"targets": {"wc": {"list_ids": ["5"]}}},
    {"targets": {"ins": {"group": "newsletter"}}},
    {"scope": "list", "targets": {"wc": {"list_ids": ["00"]}}},
    {"scope": "list", "targets": {"wc": {"list_ids": ["-0"]}}},
    {"scope": "list", "targets": {"wc": {"list_ids": ["0_"]}}},
    {"scope": "list", "targets": {"ins": {"group": "news\r\nletter"}}},
    {"reason": "line\r\nbreak"},
]


@pytest.mark.parametrize("fields", ISSUE_12)
def test_what_issue_12_measured_is_refused_by_both_judges(fields: Doc) -> None:
    doc = {"email": "a@example.com", **fields}

    assert not schema_accepts(doc)
    assert not contract_accepts(json.dumps(doc))
