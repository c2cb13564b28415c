"""decode_json: one strict JSON document, or one problem that never echoes the input."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from producer.errors import InvalidRequestError
from producer.strictjson import MAX_DEPTH, MAX_NUMBER_CHARS, Flaw, decode_json, decode_json_isolating


def problem_of(data: bytes | str, **limits: Any) -> str:
    with pytest.raises(InvalidRequestError) as caught:
        decode_json(data, **limits)
    [problem] = caught.value.problems
    return problem


def test_a_document_decodes_from_bytes_and_from_text_alike() -> None:
    document = '{"email": "jöhn@example.com", "list_ids": ["5"], "version": 1, "n": -2.5e3, "x": null}'

    from_text = decode_json(document)
    from_bytes = decode_json(document.encode("utf-8"))

    assert from_text == from_bytes == json.loads(document)


@pytest.mark.parametrize(
    "document",
    [
        b'{"email": "a@example.com", "email": "b@example.com"}',
        b'{"targets": {"wc": {"group": "a"}, "wc": {"group": "b"}}}',
        b'[{"ok": 1}, {"deep": {"k": 1, "k": 1}}]',
    ],
    ids=["top level", "nested", "inside an array"],
)
def test_a_key_given_twice_in_any_object_is_refused(document: bytes) -> None:
    assert problem_of(document) == "message: an object has the same key twice"


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_refused(literal: str) -> None:
    assert problem_of(f'{{"version": {literal}}}') == "message: NaN and Infinity are not JSON"


def test_a_number_too_large_for_a_float_is_refused() -> None:
    assert problem_of('{"version": 1e999}') == "message: a number out of range"


@pytest.mark.parametrize("digits", [MAX_NUMBER_CHARS + 1, 4301, 100_000])
def test_an_integer_with_too_many_digits_is_refused_without_the_int_limit_error(digits: int) -> None:
    problem = problem_of('{"version": ' + "7" * digits + "}")

    assert problem == f"message: a number longer than {MAX_NUMBER_CHARS} characters"


def test_a_long_but_sane_number_is_decoded() -> None:
    literal = "9" * MAX_NUMBER_CHARS

    assert decode_json(literal) == int(literal)


@pytest.mark.parametrize(
    "document",
    [b'{"reason": "caf\xe9"}', b"\xff\xfe{}", b'"\xed\xa0\x80"'],
    ids=["latin-1", "bom", "surrogate"],
)
def test_bytes_that_are_not_utf8_are_refused(document: bytes) -> None:
    assert problem_of(document) == "message: not valid UTF-8"


@pytest.mark.parametrize(
    "document",
    ['"\\ud800"', '{"\\udc00": 1}', '["ok", {"reason": "x\\uDBFFy"}]', '"\\ude00\\ud83d"', '"\ud800"'],
    ids=["high", "in a key", "nested", "pair in the wrong order", "raw in text"],
)
def test_a_lone_surrogate_anywhere_is_refused(document: str) -> None:
    assert problem_of(document) == "message: a string holds a lone surrogate (U+D800-U+DFFF)"


def test_a_surrogate_pair_and_an_escaped_backslash_before_u_are_fine() -> None:
    assert decode_json('["\\ud83d\\ude00", "\\\\ud800"]') == ["\U0001f600", "\\ud800"]


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 1000, 100_000])
@pytest.mark.parametrize("opener", ["[", '{"k":'])
def test_nesting_deeper_than_the_limit_is_refused_at_any_depth(depth: int, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    document = opener * depth + "1" + closer * depth

    assert problem_of(document) == f"message: nested deeper than {MAX_DEPTH} levels"


def test_an_unclosed_bomb_a_hundred_thousand_deep_is_refused() -> None:
    assert problem_of("[" * 100_000) == f"message: nested deeper than {MAX_DEPTH} levels"


def test_deep_nesting_hidden_between_closed_pairs_is_still_counted() -> None:
    document = "[[1]," * (MAX_DEPTH + 5) + "1" + "]" * (MAX_DEPTH + 5)

    assert problem_of(document) == f"message: nested deeper than {MAX_DEPTH} levels"


def test_nesting_exactly_at_the_limit_is_decoded() -> None:
    document = "[" * MAX_DEPTH + "]" * MAX_DEPTH

    value = decode_json(document)

    for _ in range(MAX_DEPTH - 1):
        [value] = value
    assert value == []


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    many = "[{" * 50
    document = json.dumps({"reason": many, "quoted": f'\\"{many}', "list": [[many] * 3] * 20})

    assert decode_json(document) == json.loads(document)


def test_a_smaller_depth_limit_is_honoured() -> None:
    assert problem_of('{"a": {"b": [1]}}', max_depth=2) == "message: nested deeper than 2 levels"


def test_input_over_max_bytes_is_refused_before_decoding() -> None:
    document = json.dumps({"reason": "é" * 10})

    assert problem_of(document, max_bytes=20) == "message: larger than 20 bytes"
    assert problem_of(document.encode(), max_bytes=20) == "message: larger than 20 bytes"
    assert decode_json(document, max_bytes=len(document.encode())) == {"reason": "é" * 10}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("{not json", "Expecting property name enclosed in double quotes (line 1, column 2)"),
        ("", "Expecting value (line 1, column 1)"),
        ('{"a": 1} {"b": 2}', "Extra data (line 1, column 10)"),
        ("\ufeff{}", "Expecting value (line 1, column 1)"),  # a byte order mark is not JSON
    ],
)
def test_text_that_is_not_one_json_document_is_refused_with_where(document: str, message: str) -> None:
    assert problem_of(document) == f"message: not valid JSON: {message}"


def test_brackets_that_do_not_pair_up_in_a_big_document_are_refused() -> None:
    assert problem_of("[" + "[]" * 40 + "]]") == "message: not valid JSON: brackets do not pair up"


def test_no_problem_echoes_the_input() -> None:
    secret = "jane.doe@example.com"
    documents = [
        f'{{"{secret}": 1, "{secret}": 2}}',
        f'{{"email": "{secret}", "n": NaN}}',
        f'{{"email": "{secret}" "oops"}}',
        f'["{secret}", "\\ud800"]',
        "[" * 50 + f'"{secret}"' + "]" * 50,
    ]

    problems = [problem_of(d) for d in documents]

    assert all(secret not in p and "jane" not in p for p in problems), problems


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**60), max_value=10**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=25,
)


@given(json_values, st.booleans())
def test_any_document_json_dumps_writes_decodes_to_the_same_value(value: Any, ascii_only: bool) -> None:
    document = json.dumps(value, ensure_ascii=ascii_only)

    decoded = decode_json(document)

    assert decoded == json.loads(document)


def deep(depth: int, opener: str = "[") -> str:
    closer = "]" if opener == "[" else "}"
    return opener * depth + "1" + closer * depth


DEEP = Flaw(f"nested deeper than {MAX_DEPTH} levels")


def isolating(document: str | bytes, isolate_from: int = 1) -> tuple[Any, int]:
    data = document.encode() if isinstance(document, str) else document
    return decode_json_isolating(data, isolate_from=isolate_from)


@pytest.mark.parametrize("depth", [MAX_DEPTH, 520, 100_000])
@pytest.mark.parametrize("opener", ["[", '{"k":'])
def test_nesting_past_the_limit_is_cut_where_it_crosses_it_and_the_siblings_are_decoded(
    depth: int, opener: str
) -> None:
    sibling = {"email": "a@example.com", "reason": 'brackets ]]}} "quoted" [[{{ \\'}
    document = f"[{json.dumps(sibling)}, {deep(depth, opener)}, 7]"

    value, flaws = isolating(document)

    assert (value[0], value[2], flaws) == (sibling, 7, 1)
    inner = value[1]
    for _ in range(MAX_DEPTH - 2):
        inner = inner[0] if opener == "[" else inner["k"]
    assert inner == ([DEEP] if opener == "[" else {"k": DEEP})


@pytest.mark.parametrize(
    ("item", "problem"),
    [
        ('{"email": "a@example.com", "email": "b@example.com"}', "an object has the same key twice"),
        ('{"version": NaN}', "NaN and Infinity are not JSON"),
        ('{"version": ' + "7" * 5000 + "}", f"a number longer than {MAX_NUMBER_CHARS} characters"),
        ('{"reason": "\\ud800"}', "a string holds a lone surrogate (U+D800-U+DFFF)"),
    ],
    ids=["duplicate key", "nan", "overlong number", "lone surrogate"],
)
def test_a_flaw_inside_one_item_is_kept_in_its_place_and_the_other_items_are_decoded(
    item: str, problem: str
) -> None:
    value, flaws = isolating(f'[{{"ok": 1}}, {item}, [2]]')

    assert value[0] == {"ok": 1}
    assert value[2] == [2]
    held = value[1] if isinstance(value[1], Flaw) else next(iter(value[1].values()))
    assert held == Flaw(problem)
    assert flaws == 1


def test_a_string_that_is_not_utf8_is_a_flaw_of_its_own() -> None:
    value, flaws = isolating(b'[{"reason": "caf\xe9"}, {"reason": "caf\xc3\xa9"}]')

    assert value == [{"reason": Flaw("not valid UTF-8")}, {"reason": "café"}]
    assert flaws == 1


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ('{"a": 1, "a": 2}', "an object has the same key twice"),
        ('[{"a": 1}, NaN]', "NaN and Infinity are not JSON"),
        (b'[1, 2] \xff', "not valid UTF-8"),
        ("[" * 100_000, f"nested deeper than {MAX_DEPTH} levels"),
        ("[[[" + deep(1000) + ", " + "[" * 1000, f"nested deeper than {MAX_DEPTH} levels"),
        ("[1, 2", "not valid JSON: Expecting ',' delimiter (line 1, column 6)"),
    ],
    ids=["above the level", "just above", "bytes outside strings", "never closed", "cut and never closed",
         "not json"],
)  # fmt: skip
def test_what_cannot_be_isolated_refuses_the_whole_document(document: str | bytes, problem: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        isolating(document, isolate_from=2)

    assert caught.value.problems == [f"message: {problem}"]


@given(json_values)
def test_a_document_without_a_flaw_is_decoded_as_decode_json_does(value: Any) -> None:
    document = json.dumps(value)

    assert isolating(document) == (decode_json(document), 0)
