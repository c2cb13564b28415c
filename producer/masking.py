"""Masked views of email addresses, for anything a human or a dashboard (Flower, logs) will see.

:func:`mask_email` masks one address; :func:`mask_addresses` finds and masks every address in free
text, however it is written: quoted, in angle brackets, after ``mailto:``, with a non-ASCII local
part or domain, or with its ``@`` (and any other character) escaped the way libraries escape text:
percent-encoding (also double, ``%2540``), JSON and Python escapes (``\\u0040``, ``\\x40``), HTML
character references (``&#64;``), and the fullwidth and small at signs (U+FF20, U+FE6B).

How addresses are found (linear in the length of the text): every ``@`` in any of those forms is
an anchor; the domain is read forwards from it and the local part backwards, as far as characters
that can belong to one go. ``^ = & ? / | : , ;``, quotes, brackets and white space end a local part
(they separate fields in URLs, WhatCounts data and log formats), so ``data=email^jane@x.com`` keeps
``data=email^``. Everything that may be part of an address is masked; when in doubt, more is.
"""

from __future__ import annotations

import html
import re
import string
from collections.abc import Sequence
from typing import Any, Final
from urllib.parse import unquote

#: How many masked addresses a chunk's ``argsrepr`` lists before summarising the rest.
ARGSREPR_SHOWN: Final = 3
#: What a value that is not an address, or a part that cannot be shown, becomes.
MASK: Final = "***"
#: Longest domain shown after masking (DNS limit); a longer "domain" is hidden too.
MAX_SHOWN_DOMAIN_CHARS: Final = 253
#: Most escape layers removed from one address (``%252540`` is three).
MAX_DECODE_ROUNDS: Final = 4
#: Longest quoted local part (``"john doe"@example.com``) recognised; RFC 5321 allows 64 octets.
MAX_QUOTED_LOCAL_CHARS: Final = 64

# Non-ASCII characters that separate rather than belong to an address: typographic quotes and
# brackets, ideographic comma and full stop, fullwidth ASCII punctuation. Everything else outside
# ASCII (letters and marks of any script, zero-width and bidi controls) counts as part of it.
_UNICODE_SEPARATORS: Final = (
    "\u201c\u201d\u2018\u2019\u00ab\u00bb\u2039\u203a\u201e\u201a\u300c\u300d\u300e\u300f\u3001\u3002\ufe6b"
    "\uff01-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff65"
)
_NON_ASCII_PART: Final = rf"[^\x00-\x7f\s{_UNICODE_SEPARATORS}]"
#: ASCII punctuation allowed in a local part; kept as written when it leads (``'jane``).
_LEADING_PUNCTUATION: Final = "._+'!#$*{}~`-"
_LOCAL_ASCII: Final = rf"[A-Za-z0-9{re.escape(_LEADING_PUNCTUATION)}]"
_HEX: Final = "[0-9A-Fa-f]"


def _escaped(chars: str) -> str:
    """A pattern for one of the ASCII ``chars`` escaped in any way :func:`_decode` undoes: ``%hh``
    (also ``%25hh``, ...), ``\\u00hh``, ``\\xhh``, ``&#xhh;`` and ``&#ddd;``."""
    hexes = "|".join(f"{ord(c):02x}" for c in chars)
    decimals = "|".join(str(ord(c)) for c in chars)
    percent, backslash, html_hex = rf"(?:25)*(?:{hexes})", rf"\\*(?:u00|x)(?:{hexes})", rf"x0*(?:{hexes});"
    return rf"%(?i:{percent})|\\(?i:{backslash})|&#(?i:{html_hex})|&#0*(?:{decimals});"


def _escaped_non_ascii(char: str) -> str:
    """The same for one non-ASCII character: its UTF-8 bytes percent- or ``\\x``-escaped, or its
    code point as ``\\uhhhh``, ``&#xhhhh;`` or ``&#ddddd;``."""
    utf8 = char.encode()
    percent = "".join(f"%(?:25)*{b:02x}" for b in utf8)[1:]
    backslash = r"\\*" + r"\\+".join(f"x{b:02x}" for b in utf8)
    code = ord(char)
    return rf"%(?i:{percent})|\\(?i:{backslash}|\\*u{code:04x})|&#(?i:x0*{code:x};)|&#0*{code};"


#: Every written form of ``@`` starts with one of these; most text has none and is passed at once.
_AT_FIRST_CHARS: Final = re.compile(r"[@\uff20\ufe6b%\\&]")
#: ``@`` as written by people, libraries and attackers.
_AT: Final = re.compile(
    rf"[@\uff20\ufe6b]|{_escaped('@')}|\\+U00000040|&commat;"
    rf"|{_escaped_non_ascii(chr(0xFF20))}|{_escaped_non_ascii(chr(0xFE6B))}"
)

# The local part, read backwards from the ``@`` on the reversed text: one literal character, or
# one escaped character (percent, backslash or HTML escape, each written reversed). Quoted local
# parts first, when the ``@`` follows a closing quote.
_LOCAL_BACKWARDS: Final = re.compile(
    rf'"(?P<quoted>[^"\r\n]{{1,{MAX_QUOTED_LOCAL_CHARS}}})"'
    rf"|(?P<run>(?:{_HEX}{{2}}(?:52)*%|{_HEX}{{4}}u\\+|{_HEX}{{8}}U\\+|{_HEX}{{2}}x\\+"
    rf"|;\d{{1,7}}#&|;{_HEX}{{1,6}}[xX]#&|{_LOCAL_ASCII}|{_NON_ASCII_PART})++)"
)
# One character of a local part as written forwards, to split the part found above into units.
_LOCAL_UNIT: Final = re.compile(
    rf"%(?:25)*{_HEX}{{2}}|\\+(?:u{_HEX}{{4}}|U{_HEX}{{8}}|x{_HEX}{{2}})|&#\d{{1,7}};|&#[xX]{_HEX}{{1,6}};|.",
    re.DOTALL,
)
_IDNA_DOTS_ESCAPED: Final = "|".join(_escaped_non_ascii(c) for c in "\u3002\uff0e\uff61")
# One escaped character of a domain label: an ASCII letter, digit or '-', or part of a non-ASCII
# one, but not an escaped '@' or IDNA full stop.
_DOMAIN_ESCAPE: Final = (
    rf"(?!{_AT.pattern}|{_IDNA_DOTS_ESCAPED})(?:{_escaped(string.ascii_letters + string.digits + '-')}"
    rf"|%(?:25)*[89A-Fa-f]{_HEX}|\\+(?:u(?!00[0-7]){_HEX}{{4}}|U{_HEX}{{8}}|x[89A-Fa-f]{_HEX})"
    rf"|&#0*(?:12[89]|1[3-9]\d|[2-9]\d\d|\d{{4,7}});|&#[xX]0*(?:[89A-Fa-f]{_HEX}|{_HEX}{{3,6}});)"
)
_LABEL: Final = rf"(?:[A-Za-z0-9_-]|{_NON_ASCII_PART}|{_DOMAIN_ESCAPE})++"
_DOT: Final = rf"(?:\.|{_escaped('.')}|[\u3002\uff0e\uff61]|{_IDNA_DOTS_ESCAPED})"
_TLD: Final = (
    rf"(?:[A-Za-z]|{_NON_ASCII_PART}|{_DOMAIN_ESCAPE})(?:[A-Za-z0-9-]|{_NON_ASCII_PART}|{_DOMAIN_ESCAPE})*+"
)
#: A domain read forwards from the ``@``: at least one dot, and a last label that starts with a letter.
_DOMAIN: Final = re.compile(rf"(?:{_LABEL}{_DOT})+{_TLD}")
#: The start of a domain that a library cut short with ``...`` or ``…`` (``jane.doe@exam...``).
_TRUNCATED_DOMAIN: Final = re.compile(rf"(?:{_LABEL}|{_DOT}(?!\.\.))*+(?=\.\.\.|\u2026)")

_ESCAPE_START: Final = re.compile(r"[%\\&]")
#: Decoded ASCII characters that may continue a local part; any other ASCII character ends it.
_LOCAL_ASCII_CHARS: Final = frozenset(string.ascii_letters + string.digits + _LEADING_PUNCTUATION)
# A domain that may be shown: letters, digits, '-', '_' and dots; no controls, bidi overrides,
# lone surrogates, separators or punctuation.
_DOMAIN_CHAR: Final = (
    rf"(?:[\w-]|[^\x00-\x7f\s{_UNICODE_SEPARATORS}\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff])"
)
_SHOWN_DOMAIN: Final = re.compile(rf"{_DOMAIN_CHAR}+(?:\.{_DOMAIN_CHAR}+)*")
_BACKSLASH_ESCAPES: Final = re.compile(rf"\\+(?:u({_HEX}{{4}})|U({_HEX}{{8}}))")
_BACKSLASH_BYTES: Final = re.compile(rf"(?:\\+x{_HEX}{{2}})+")
_IDNA_DOTS: Final = str.maketrans("\u3002\uff0e\uff61", "...")


def mask_email(address: str) -> str:
    """``jane.doe@example.com`` → ``j***@example.com``: the first character of the local part (only
    if it is a letter or digit, else ``*``) and the domain after the last ``@``. ``***`` if there is
    no ``@``, nothing before it, or a domain that is not hostname-shaped (spaces, punctuation,
    controls), so nothing but a masked letter and a domain ever comes out. Unicode is kept
    (``ö***@exämple.com``); escapes are not decoded here (``jane%40x.com`` → ``***``)."""
    local, at, domain = address.rpartition("@")
    if not at or not local or not _shown_domain(domain):
        return MASK
    first = local[0] if local[0].isalnum() else "*"
    return f"{first}***@{domain}"


def mask_addresses(text: str) -> str:
    """Every email address in ``text`` masked with :func:`mask_email`, in whatever quoting, escaping
    or script it is written; the rest of the text unchanged."""
    if not _AT_FIRST_CHARS.search(text):
        return text
    pieces: list[str] = []
    done = floor = 0  # end of the text already masked; end of the last '@' seen
    reversed_text = ""
    for at in _AT.finditer(text):
        domain = _domain_after(text, at.end()) if at.start() >= done else None
        if domain is not None:
            reversed_text = reversed_text or text[::-1]
            start, masked = _masked_address(text, reversed_text, at.start(), domain[1], max(done, floor))
            if start is not None:
                pieces += [text[done:start], masked]
                done = domain[0]
        floor = at.end()
    return "".join([*pieces, text[done:]]) if pieces else text


def _domain_after(text: str, at_end: int) -> tuple[int, str] | None:
    """Where the domain after an ``@`` ends and what of it may be shown (``""``: nothing), or
    ``None`` if no domain follows."""
    domain = _DOMAIN.match(text, at_end)
    if domain is not None:
        # A domain directly followed by another '@' may hold the next address's local part: hide it.
        hidden = _AT.match(text, domain.end()) is not None
        return domain.end(), "" if hidden else _decode(domain[0]).translate(_IDNA_DOTS)
    cut = _TRUNCATED_DOMAIN.match(text, at_end)  # "jane@exam..." as a library shortened it
    return None if cut is None else (cut.end(), "")


def _masked_address(
    text: str, reversed_text: str, at_start: int, domain: str, floor: int
) -> tuple[int | None, str]:
    """Where the address whose ``@`` starts at ``at_start`` starts (``None``: it has no local part)
    and its masked text. The local part is not looked for before ``floor``: each stretch of text
    is read once."""
    local = _LOCAL_BACKWARDS.match(reversed_text, len(text) - at_start, len(text) - floor)
    if local is None:
        return None, ""
    start = len(text) - local.end()
    if local["quoted"] is not None:
        return start, '"' + mask_email(f"{_decode(local['quoted'][::-1])}@{domain}")
    prefix, rest = _split_local(text[start:at_start])
    if not rest:
        return None, ""
    return start, prefix + mask_email(f"{_decode(rest)}@{domain}")


def _split_local(raw: str) -> tuple[str, str]:
    """``email%5Ejane`` → (``email%5E``, ``jane``): what precedes the last separator, and leading
    punctuation (``'jane`` → ``'``), stay as written; the rest is the local part."""
    if not _ESCAPE_START.search(raw):  # only literal local-part characters: no separator inside
        rest = raw.lstrip(_LEADING_PUNCTUATION)
        return raw[: len(raw) - len(rest)], rest
    units = _LOCAL_UNIT.findall(raw)
    keep = 0
    for index, unit in enumerate(units):
        char = _decode(unit)  # an escaped byte of a UTF-8 sequence decodes to non-ASCII: a part
        separator = char.isascii() and char not in _LOCAL_ASCII_CHARS
        if separator or (keep == index and char in _LEADING_PUNCTUATION):
            keep = index + 1
    return "".join(units[:keep]), "".join(units[keep:])


def _decode(text: str) -> str:
    """Undo percent, backslash and HTML escapes, several layers deep."""
    if not _ESCAPE_START.search(text):
        return text
    for _ in range(MAX_DECODE_ROUNDS):
        decoded = html.unescape(_backslash_unescape(unquote(text, errors="replace")))
        if decoded == text:
            break
        text = decoded
    return text


def _backslash_unescape(text: str) -> str:
    if "\\" not in text:
        return text
    text = _BACKSLASH_BYTES.sub(_utf8_bytes, text)
    text = _BACKSLASH_ESCAPES.sub(lambda m: _code_point(m[1] or m[2]), text)
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")  # joins \ud83d\ude00


def _utf8_bytes(match: re.Match[str]) -> str:
    data = bytes(int(h, 16) for h in re.findall(rf"x({_HEX}{{2}})", match[0]))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")  # a str repr's \xe4 is the code point itself


def _code_point(hex_digits: str) -> str:
    value = int(hex_digits, 16)
    return chr(value) if value <= 0x10FFFF else "\ufffd"


def _shown_domain(domain: str) -> bool:
    return len(domain) <= MAX_SHOWN_DOMAIN_CHARS and _SHOWN_DOMAIN.fullmatch(domain) is not None


def masked_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """The request with its address masked (everything else is not personal data)."""
    email = payload.get("email")
    return {**payload, "email": mask_email(email) if isinstance(email, str) else MASK}


def chunk_argsrepr(payloads: Sequence[dict[str, Any]]) -> str:
    """What Flower shows for an intake task: request ids and masked addresses, never a full address."""
    shown = [
        f"{{'request_id': {p.get('request_id')!r}, 'email': {masked_payload(p)['email']!r}}}"
        for p in payloads[:ARGSREPR_SHOWN]
    ]
    more = len(payloads) - len(shown)
    if more > 0:
        shown.append(f"... {more} more")
    return f"([{', '.join(shown)}],)  # {len(payloads)} request(s)"
