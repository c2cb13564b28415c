"""Addresses are masked in any quoting, escaping or script; keyed ordinary words survive.

The examples pin down what a redacted line looks like; the properties (Hypothesis) build addresses
from random ASCII and non-ASCII local parts and domains, write them in every form a library or an
attacker produces, and check that no reader could recover the hidden part of the local part.
"""

from __future__ import annotations

import html
import json
import string
from collections.abc import Callable
from urllib.parse import quote, urlencode

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from producer.masking import mask_addresses
from tests.worker.logging_support import decoded
from worker.logs import REDACTED, redact_text

# -- examples -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        ("'jane@example.com'", "'j***@example.com'"),
        ("input_value='jane@example.com'", "input_value='j***@example.com'"),
        ('{"email": "jane@example.com"}', '{"email": "j***@example.com"}'),
        ("<jane@example.com>", "<j***@example.com>"),
        ("mailto:jane@example.com", "mailto:j***@example.com"),
        ("JANE+TAG@EXAMPLE.COM", "J***@EXAMPLE.COM"),
        ("o'brien@example.ie", "o***@example.ie"),
        ('"john doe"@example.com', '"j***@example.com'),
        ("jöhn.döe@exämple.com", "j***@exämple.com"),
        ("jöhn@xn--exmple-cua.com", "j***@xn--exmple-cua.com"),
        ("中文@例え.テスト", "中***@例え.テスト"),
        ("jane%40example.com", "j***@example.com"),
        ("jane%2Btag%40example.com", "j***@example.com"),
        ("jane%2540example.com", "j***@example.com"),
        ("email%5Ejane%40example.com", "email%5Ej***@example.com"),
        ("%E4%B8%AD%E6%96%87%40ex%C3%A4mple.com", "中***@exämple.com"),
        ("jane\\u0040example.com", "j***@example.com"),
        ('"j\\\\u00f6hn@ex\\\\u00e4mple.com"', '"j***@exämple.com"'),
        ("b'j\\xc3\\xb6hn@ex\\xc3\\xa4mple.com'", "b***@exämple.com'"),  # ' may be in a local part
        ("jane&#64;example.com", "j***@example.com"),
        ("&#106;&#97;ne&#x40;&#101;xample&#46;com", "j***@example.com"),
        ("jane&commat;example.com", "j***@example.com"),
        ("jane\uff20example.com", "j***@example.com"),
        ("jane@example\u3002com", "j***@example.com"),
        ("data=email^jane@example.com^bob@example.org", "data=email^j***@example.com^b***@example.org"),
        ("bob%40x.com%3Bjane%40y.com", "b***@x.com%3Bj***@y.com"),
        ("to: jane@example.com, bob@x.org;carl@x.net.", "to: j***@example.com, b***@x.org;c***@x.net."),
        ("body: [{'email': 'jane.doe@exam...", "body: [{'email': '***..."),
        ("bob@x.comjane@y.com", "***@y.com"),
        ("j***@example.com", "j***@example.com"),
        ("celery@vm ready, @app.task, user@localhost", "celery@vm ready, @app.task, user@localhost"),
    ],
)
def test_an_address_in_any_quoting_or_escaping_is_masked(text: str, redacted: str) -> None:
    assert mask_addresses(text) == redacted


def test_text_without_an_address_is_returned_unchanged() -> None:
    text = "delivered 500 records to wc-main in 0.84 s (100% of the batch) &amp; \\u00e4"

    assert mask_addresses(text) is text


# -- properties: addresses never survive --------------------------------------------------------

_LOCAL_PUNCTUATION = "._+-'"
_NON_ASCII_LETTERS = st.characters(categories=("Ll", "Lu", "Lo"), min_codepoint=0xC0)
# Letters, marks and digits of any script: what follows the first character of a name.
_NON_ASCII_PARTS = st.characters(categories=("Ll", "Lu", "Lo", "Lm", "Mn", "Mc", "Nd"), min_codepoint=0xC0)
_ascii_first = st.sampled_from(string.ascii_letters + string.digits)
_ascii_rest = st.text(string.ascii_letters + string.digits + _LOCAL_PUNCTUATION, min_size=2, max_size=20)
_unicode_rest = st.text(
    st.one_of(_NON_ASCII_PARTS, st.sampled_from(string.ascii_lowercase + _LOCAL_PUNCTUATION)),
    min_size=2,
    max_size=12,
)
local_parts = st.tuples(st.one_of(_ascii_first, _NON_ASCII_LETTERS), st.one_of(_ascii_rest, _unicode_rest))
_ascii_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
_unicode_label = st.text(st.one_of(_NON_ASCII_PARTS, st.sampled_from("abcxyz")), min_size=1, max_size=10)
domains = st.builds(
    lambda labels, tld: ".".join([*labels, tld]),
    st.lists(st.one_of(_ascii_label, _unicode_label), min_size=1, max_size=3),
    st.one_of(st.from_regex(r"[a-z]{2,6}", fullmatch=True), _unicode_label.filter(lambda t: t[0].isalpha())),
)


def _punycode(address: str) -> str:
    local, _, domain = address.rpartition("@")
    return f"{local}@{domain.encode('idna').decode('ascii')}"


def _ideographic_full_stops(address: str) -> str:
    local, _, domain = address.rpartition("@")
    return local + "@" + domain.replace(".", "\u3002")


#: Every way an address was seen written in a log line.
FORMS: dict[str, Callable[[str], str]] = {
    "plain": lambda a: a,
    "upper case": str.upper,
    "single quotes": lambda a: f"'{a}'",
    "double quotes": lambda a: f'"{a}"',
    "angle brackets": lambda a: f"<{a}>",
    "mailto": lambda a: f"mailto:{a}",
    "pydantic input_value": lambda a: f"input_value='{a}'",
    "dict repr": lambda a: repr({"email": a}),
    "JSON": lambda a: json.dumps({"email": a}),
    "JSON in JSON": lambda a: json.dumps(json.dumps({"email": a})),
    "bytes repr": lambda a: repr(a.encode()),
    "percent-encoded": lambda a: quote(a, safe=""),
    "double percent-encoded": lambda a: quote(quote(a, safe=""), safe=""),
    "WhatCounts data in a query": lambda a: urlencode({"data": f"email^{a}"}),
    "WhatCounts data": lambda a: f"data=email^{a}^",
    "HTML entity @": lambda a: html.escape(a).replace("@", "&#64;"),
    "HTML entities throughout": lambda a: "".join(f"&#{ord(c)};" for c in a),
    "JSON escape @": lambda a: a.replace("@", "\\u0040"),
    "fullwidth @": lambda a: a.replace("@", "\uff20"),
    "small @": lambda a: a.replace("@", "\ufe6b"),
    "fullwidth @ in JSON": lambda a: json.dumps(a.replace("@", "\uff20")),
    "fullwidth @ percent-encoded": lambda a: quote(a.replace("@", "\uff20"), safe=""),
    "fullwidth @ in a bytes repr": lambda a: repr(a.replace("@", "\uff20").encode()),
    "ideographic full stops in JSON": lambda a: json.dumps(_ideographic_full_stops(a)),
    "punycode domain": _punycode,
}
#: Text around the address.
CONTEXTS = ["{}", "delivery failed for {}: 404", "[{}]", "x={}&y=1", "{}, {}", "({}).", "email: {}\nnext"]


#: Stands in for the local part to see what the form, the context and the domain add around it.
NEUTRAL_LOCAL_PART = "q"


def _written(address: str, form: str, context: str) -> str:
    return context.format(*[FORMS[form](address)] * context.count("{}"))


@settings(max_examples=400, deadline=None)
@given(
    local=local_parts,
    domain=domains,
    form=st.sampled_from(sorted(FORMS)),
    context=st.sampled_from(CONTEXTS),
)
@example(local=("j", "öhn.döe"), domain="exämple.com", form="percent-encoded", context="{}")
@example(local=("j", "ane"), domain="example.com", form="WhatCounts data in a query", context="{}")
@example(local=("a", "_\u016b"), domain="x.aa", form="bytes repr", context="{}")  # \xab alone is «
def test_no_address_survives_redaction_in_any_form(
    local: tuple[str, str], domain: str, form: str, context: str
) -> None:
    first, hidden = local
    try:
        text = _written(f"{first}{hidden}@{domain}", form, context)
    except UnicodeError:  # a label IDNA refuses: no punycode form
        assume(False)
    surroundings = decoded(_written(f"{NEUTRAL_LOCAL_PART}@{domain}", form, context))
    assume(any(c.isalnum() for c in hidden) and decoded(hidden) not in surroundings)

    redacted = redact_text(text)

    assert decoded(hidden) not in decoded(redacted)
    assert "***" in redacted


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=200))
def test_redaction_is_idempotent(text: str) -> None:
    once = redact_text(text)

    assert redact_text(once) == once


# -- properties: keyed ordinary words survive, keyed secret names do not ------------------------

_SECRET_NAMES = ["p", "pwd", "password", "passwd", "token", "secret", "api_key", "apikey", "jwt"]
_ORDINARY_WORDS = ["group", "step", "setup", "map", "app", "http", "sp", "stop", "gap", "jump", "wrap"]
_KEYED = [
    "{k}={v}",
    "?{k}={v}&x=1",
    "{k}: {v}",
    "'{k}': '{v}'",
    '"{k}": "{v}"',
    '\\"{k}\\": \\"{v}\\"',
    "{k}='{v}'",
]
_values = st.from_regex(r"[a-z][a-z0-9]{2,11}", fullmatch=True).filter(lambda v: "eyj" not in v)
# A word that ends in a secret name without being one: a letter or digit right before it.
_words_ending_in_a_secret_name = st.builds(
    lambda stem, name: stem + name,
    st.from_regex(r"[a-z]{0,6}[a-z0-9]", fullmatch=True),
    st.sampled_from(_SECRET_NAMES),
)


@settings(max_examples=300, deadline=None)
@given(
    word=st.one_of(st.sampled_from(_ORDINARY_WORDS), _words_ending_in_a_secret_name),
    value=_values,
    layout=st.sampled_from(_KEYED),
)
def test_a_value_keyed_by_an_ordinary_word_survives(word: str, value: str, layout: str) -> None:
    text = layout.format(k=word, v=value)

    assert redact_text(text) == text


@settings(max_examples=300, deadline=None)
@given(
    prefix=st.sampled_from(["", "db_", "x-", "client_", "X-Auth-"]),
    name=st.sampled_from(_SECRET_NAMES),
    value=_values,
    layout=st.sampled_from(_KEYED),
)
def test_a_value_keyed_by_a_secret_name_is_redacted(prefix: str, name: str, value: str, layout: str) -> None:
    text = layout.format(k=prefix + name, v=value)

    redacted = redact_text(text)

    assert redacted == layout.format(k=prefix + name, v=REDACTED)
