"""Every URL the settings hold, checked and masked in one place.

Redis URLs (``broker_url``, ``result_backend``, ``redis_url``) are checked against
:data:`REDIS_SCHEMES`, one row per accepted scheme: which clients can use it and which query
parameters it must or must not carry. Celery's Sentinel form (``sentinel://h1:26379;sentinel://h2:26379/0``,
with the master name in the ``sentinel_master`` setting) is one of the rows.

Provider URLs (a connection's ``base_url`` and ``token_url``) must not carry credentials: they belong
in the connection's secret fields, which are masked everywhere and can come from files.

Nothing here echoes a URL in an error: a URL may hold a password.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Final
from urllib.parse import SplitResult, parse_qsl, urlencode, urlsplit, urlunsplit

from producer.connect import SENTINEL_SEPARATOR, TLS_SWITCH, is_sentinel_url, parse_sentinel_url

MASK: Final = "***"
#: Query parameters that are credentials wherever they appear (WhatCounts ``p``, API keys, tokens).
CREDENTIAL_PARAMS: Final = frozenset(
    {
        "p", "pw", "pwd", "pass", "passwd", "password", "secret", "client_secret",
        "token", "access_token", "refresh_token", "api_key", "apikey", "key", "auth", "sig", "signature",
    }
)  # fmt: skip
#: TLS parameters Celery reads from a Redis URL.
SSL_PARAMS: Final = frozenset({"ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile"})
#: Values Celery accepts for ``ssl_cert_reqs``.
CERT_REQS: Final = frozenset({"required", "optional", "none", "CERT_REQUIRED", "CERT_OPTIONAL", "CERT_NONE"})
HIGHEST_PORT: Final = 65535
EXAMPLE_URL: Final = "redis://localhost:6379/0"


class RedisUse(StrEnum):
    """Which client opens the URL: what it accepts differs."""

    #: Celery's broker (kombu) and result backend.
    CELERY = "celery"
    #: redis-py, for the buffers, retries, dead letters and status.
    STATE = "state"


@dataclass(frozen=True)
class RedisScheme:
    """One accepted Redis URL scheme."""

    #: The clients that can open it.
    uses: frozenset[RedisUse]
    #: ``HOST[:PORT][/DB]`` (a network address) rather than a socket path with ``?db=N``.
    network: bool
    #: Query parameters a client needs, each with the values accepted.
    required: Mapping[RedisUse, Mapping[str, frozenset[str]]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    #: Query parameters it must not carry, and what to do instead.
    forbidden: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    #: What to use instead where a client cannot open it.
    instead: str = ""
    #: Several addresses separated by this (Sentinel's ``;``), each ``scheme://HOST[:PORT][/DB]``.
    separator: str = ""
    #: The query parameter whose presence turns TLS on; the other TLS parameters need it.
    tls_switch: str = ""


REDIS_SCHEMES: Final[Mapping[str, RedisScheme]] = MappingProxyType(
    {
        "redis": RedisScheme(
            uses=frozenset(RedisUse),
            network=True,
            forbidden=MappingProxyType(dict.fromkeys(SSL_PARAMS, "TLS parameters need rediss://")),
        ),
        "rediss": RedisScheme(
            uses=frozenset(RedisUse),
            network=True,
            # Celery refuses a rediss:// URL without it (the worker would die at start).
            required=MappingProxyType({RedisUse.CELERY: MappingProxyType({"ssl_cert_reqs": CERT_REQS})}),
        ),
        "unix": RedisScheme(
            uses=frozenset({RedisUse.STATE}),
            network=False,
            instead="Celery cannot open unix:// sockets: give the broker a redis:// or rediss:// URL",
        ),
        # Celery's form; the master name is the setting sentinel_master (checked with the settings).
        "sentinel": RedisScheme(
            uses=frozenset(RedisUse),
            network=True,
            separator=SENTINEL_SEPARATOR,
            tls_switch=TLS_SWITCH,
        ),
    }
)


def check_redis_url(url: str, use: RedisUse) -> str:
    """``url`` if ``use``'s client can open it; else ValueError saying what is wrong (never the URL)."""
    text = url.strip()
    if not text or "://" not in text or any(c.isspace() for c in text):
        raise ValueError(f"not a URL: use e.g. {EXAMPLE_URL} (rediss:// for TLS)")
    parts = _split(text)
    name = parts.scheme.lower()
    scheme = REDIS_SCHEMES.get(name)
    if scheme is None:
        raise ValueError(f"{name}:// is not a Redis URL scheme: use {_accepted(use)}")
    if use not in scheme.uses:
        raise ValueError(scheme.instead or f"{name}:// cannot be used here: use {_accepted(use)}")
    query = _check_addresses(text, name, scheme.separator) if scheme.separator else _check_one(parts, scheme)
    _check_query(name, scheme, use, query)
    return url


def _check_one(parts: SplitResult, scheme: RedisScheme) -> dict[str, str]:
    """A one-address URL's host, port and DB (or socket path and ``?db=``); returns its query."""
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    if scheme.network:
        _check_address(parts)
        _check_db(parts.path.strip("/"), "the path (/DB)")
    else:
        _check_socket(parts, query.get("db", ""))
    return query


def _check_addresses(text: str, name: str, separator: str) -> dict[str, str]:
    """Every address of a several-address URL (Sentinel's) is ``name://HOST[:PORT][/DB]`` and they
    agree on the DB and password; returns the query parameters of them all."""
    query: dict[str, str] = {}
    for chunk in text.split(separator):
        parts = _split(chunk)
        if parts.scheme.lower() != name:
            raise ValueError(
                f"every address must read {name}://HOST[:PORT], separated by '{separator}', "
                f"as in {name}://h1:26379{separator}{name}://h2:26379/0"
            )
        query.update(_check_one(parts, REDIS_SCHEMES[name]))
    parse_sentinel_url(text)  # raises when the addresses disagree on the DB or the password
    return query


def _split(text: str) -> SplitResult:
    try:
        return urlsplit(text)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        raise ValueError(f"not a URL: use e.g. {EXAMPLE_URL}") from None


def _accepted(use: RedisUse) -> str:
    return ", ".join(f"{name}://" for name, s in REDIS_SCHEMES.items() if use in s.uses)


def _check_address(parts: SplitResult) -> None:
    if not parts.hostname:
        raise ValueError(f"names no host: use e.g. {EXAMPLE_URL}")
    try:
        port = parts.port
    except ValueError:  # not a number, or out of range
        port = -1
    if port is not None and not 1 <= port <= HIGHEST_PORT:
        raise ValueError(f"the port must be a number from 1 to {HIGHEST_PORT}")


def _check_db(db: str, where: str) -> None:
    if db and not db.isdigit():
        raise ValueError(f"{where} must be a database number (0, 1, ...), as in {EXAMPLE_URL}")


def _check_socket(parts: SplitResult, db: str) -> None:
    if parts.hostname or not parts.path.startswith("/") or parts.path == "/":
        raise ValueError("a unix:// URL names a socket path, as in unix:///run/redis/redis.sock?db=0")
    _check_db(db, "db=")


def _check_query(name: str, scheme: RedisScheme, use: RedisUse, query: Mapping[str, str]) -> None:
    for param, accepted in scheme.required.get(use, {}).items():
        if query.get(param) not in accepted:
            choices = ", ".join(sorted((v for v in accepted if v.islower()), reverse=True))
            raise ValueError(f"a {name}:// URL for Celery needs ?{param}= one of {choices}")
    for param, why in scheme.forbidden.items():
        if param in query:
            raise ValueError(f"{param} in a {name}:// URL: {why}")
    if scheme.tls_switch:
        _check_tls_switch(name, scheme.tls_switch, query)


def _check_tls_switch(name: str, switch: str, query: Mapping[str, str]) -> None:
    choices = ", ".join(sorted((v for v in CERT_REQS if v.islower()), reverse=True))
    if switch in query and query[switch] not in CERT_REQS:
        raise ValueError(f"?{switch}= in a {name}:// URL must be one of {choices}")
    others = sorted(set(query) & SSL_PARAMS - {switch})
    if others and switch not in query:
        raise ValueError(
            f"{others[0]} in a {name}:// URL needs ?{switch}= one of {choices} (it turns TLS on)"
        )


# -- provider URLs -------------------------------------------------------------------------------


def credentials_in(url: str) -> list[str]:
    """Where ``url`` carries credentials: ``user:password@`` and credential query parameters."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    found = ["user:password@"] if parts.username is not None or parts.password is not None else []
    names = {name.lower() for name, _ in parse_qsl(parts.query, keep_blank_values=True)}
    return found + [f"{name}=" for name in sorted(names & CREDENTIAL_PARAMS)]


def mask_url(url: str) -> str:
    """The URL with its password and every credential parameter's value replaced by ``***`` (in every
    address of a Sentinel URL)."""
    if is_sentinel_url(url):
        return SENTINEL_SEPARATOR.join(_mask_one(chunk) for chunk in url.split(SENTINEL_SEPARATOR))
    return _mask_one(url)


def _mask_one(url: str) -> str:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return MASK  # unreadable: show nothing of it
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    if parts.password is None and not {k.lower() for k, _ in pairs} & CREDENTIAL_PARAMS:
        return url  # nothing to hide: as given (urlunsplit would turn unix:///path into unix:/path)
    netloc = parts.netloc
    if parts.password is not None:
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host
        netloc = f"{parts.username or ''}:{MASK}@{host}" + (f":{port}" if port else "")
    query = urlencode([(k, MASK if k.lower() in CREDENTIAL_PARAMS else v) for k, v in pairs], safe="*")
    return urlunsplit(parts._replace(netloc=netloc, query=query if pairs else parts.query))


def check_provider_url(url: str, *, base: bool) -> str:
    """``url`` unless it carries credentials, or (``base``) a query or fragment the adapter would break."""
    found = credentials_in(url)
    if found:
        raise ValueError(
            f"holds credentials ({', '.join(found)}): they belong in the connection's secret fields "
            "(password, token, api_key, client_secret, refresh_token, or <field>_file: /path), "
            "which are masked everywhere; never in a URL"
        )
    parts = urlsplit(url)
    if base and (parts.query or parts.fragment):
        raise ValueError(
            "must not carry a query (?...) or fragment (#...): the adapter adds its own path and "
            "parameters (e.g. https://api.whatcounts.com, not .../bin/api_web?r=...)"
        )
    return url
