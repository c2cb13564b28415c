"""A Redis client from a URL, for the producer and (through ``worker.redis_client``) the workers.

Accepted forms (the Redis the workers' ``broker_url`` names): ``redis://[:password@]host[:port][/db]``,
``rediss://...`` (TLS), ``unix:///path/to.sock?db=N``, and Celery's Sentinel form
``sentinel://[:password@]host1:26379;sentinel://host2:26379/0`` with a master name.

A Sentinel URL lists the Sentinels, separated by ``;``. The password and ``/DB`` (on any one address,
or the same on several) are the data nodes'; ``?ssl_cert_reqs=required`` (with ``ssl_ca_certs``,
``ssl_certfile``, ``ssl_keyfile`` as for ``rediss://``) turns TLS on for the data nodes and the
Sentinels. The client asks the Sentinels for the current primary whenever it (re)connects, so it
follows a failover without a restart; Sentinel's own password is ``sentinel_password``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, TypedDict
from urllib.parse import parse_qsl, urlsplit

import redis
from redis.sentinel import Sentinel

#: The scheme of Celery's (and kombu's) Sentinel URLs.
SENTINEL_SCHEME: Final = "sentinel"
#: Port a Sentinel listens on unless the URL says otherwise.
SENTINEL_PORT: Final = 26379
#: Separator between the Sentinels of one URL (Celery's form).
SENTINEL_SEPARATOR: Final = ";"
#: The query parameter that turns TLS on in a Sentinel URL; the other ``ssl_*`` ones need it.
TLS_SWITCH: Final = "ssl_cert_reqs"
#: TLS parameters a Sentinel URL may carry (the same as a ``rediss://`` URL's).
TLS_PARAMS: Final = frozenset({"ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile"})


class SentinelOptions(TypedDict):
    """What a ``sentinel://`` URL needs besides itself, as keyword arguments of :func:`redis_client`."""

    #: The master name the Sentinels monitor.
    sentinel_master: str | None
    #: The Sentinels' own password, if they have one.
    sentinel_password: str | None


@dataclass(frozen=True)
class SentinelUrl:
    """A ``sentinel://`` URL taken apart: where the Sentinels are and how to reach the data nodes."""

    #: ``(host, port)`` of each Sentinel, in the URL's order.
    sentinels: tuple[tuple[str, int], ...]
    db: int = 0
    username: str | None = None
    #: The data nodes' password (``requirepass`` / ACL), not Sentinel's own.
    password: str | None = None
    #: ``ssl_*`` parameters; TLS is on when ``ssl_cert_reqs`` is among them.
    tls: dict[str, str] = field(default_factory=dict)

    def celery_url(self) -> str:
        """The same URL for Celery: every address with the credentials and DB (Celery reads them from
        the first address only), without the TLS query (Celery takes TLS as ``*_use_ssl``)."""
        auth = f"{self.username or ''}:{self.password}@" if self.password is not None else ""
        return SENTINEL_SEPARATOR.join(
            f"{SENTINEL_SCHEME}://{auth}{_host(host)}:{port}/{self.db}" for host, port in self.sentinels
        )


def is_sentinel_url(url: str) -> bool:
    return url.strip().lower().startswith(f"{SENTINEL_SCHEME}://")


def parse_sentinel_url(url: str) -> SentinelUrl:
    """Take a ``sentinel://`` URL apart (ValueError if it cannot be; the message never holds the URL)."""
    found: dict[str, set[Any]] = {"db": set(), "username": set(), "password": set()}
    sentinels: list[tuple[str, int]] = []
    tls: dict[str, str] = {}
    for chunk in url.strip().split(SENTINEL_SEPARATOR):
        parts = urlsplit(chunk.strip())
        if parts.scheme.lower() != SENTINEL_SCHEME or not parts.hostname:
            raise ValueError("every address must read sentinel://HOST[:PORT], separated by ';'")
        sentinels.append((parts.hostname, parts.port or SENTINEL_PORT))
        if parts.path.strip("/"):
            found["db"].add(int(parts.path.strip("/")))
        if parts.password is not None:
            found["password"].add(parts.password)
            found["username"].add(parts.username or None)
        tls.update(parse_qsl(parts.query))
    for name, values in found.items():
        if len(values) > 1:
            what = {"db": "DB (/N)", "username": "user name"}.get(name, name)
            raise ValueError(f"the addresses disagree on the {what}: give it once or the same on each")
    return SentinelUrl(
        tuple(sentinels),
        db=next(iter(found["db"]), 0),
        username=next(iter(found["username"]), None),
        password=next(iter(found["password"]), None),
        tls=tls,
    )


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def redis_client(
    url: str,
    *,
    max_connections: int | None = None,
    connect_timeout_s: float = 5.0,
    socket_timeout_s: float = 30.0,
    decode_responses: bool = True,
    sentinel_master: str | None = None,
    sentinel_password: str | None = None,
    **options: Any,
) -> redis.Redis:
    """A pooled client for ``url`` (thread-safe; one TCP connection per concurrent command).

    For a ``sentinel://`` URL, ``sentinel_master`` names the monitored primary (required) and
    ``sentinel_password`` is the Sentinels' own password, if they have one.
    """
    common = {
        "max_connections": max_connections,
        "socket_connect_timeout": connect_timeout_s,
        "socket_timeout": socket_timeout_s,
        "decode_responses": decode_responses,
        **options,
    }
    if is_sentinel_url(url):
        if not sentinel_master:
            raise ValueError("a sentinel:// URL needs the master name (sentinel_master)")
        return _sentinel_client(parse_sentinel_url(url), sentinel_master, sentinel_password, common)
    return redis.Redis.from_url(url, **common)


def _sentinel_client(
    parsed: SentinelUrl, master: str, sentinel_password: str | None, common: dict[str, Any]
) -> redis.Redis:
    tls = tls_options(parsed)
    manager = Sentinel(  # type: ignore[no-untyped-call]
        list(parsed.sentinels),
        sentinel_kwargs=sentinel_options(
            sentinel_password,
            connect_timeout_s=common["socket_connect_timeout"],
            socket_timeout_s=common["socket_timeout"],
            tls=tls,
        ),
    )
    client: redis.Redis = manager.master_for(  # type: ignore[no-untyped-call]
        master,
        db=parsed.db,
        username=parsed.username,
        password=parsed.password,
        **tls,
        **common,
    )
    return client


def tls_params(parsed: SentinelUrl) -> dict[str, str]:
    """A Sentinel URL's TLS parameters (none: no TLS), ``ssl_cert_reqs`` as ``required``/``optional``/
    ``none`` (redis-py does not read ``CERT_REQUIRED``), as Celery's ``broker_use_ssl`` takes them."""
    if TLS_SWITCH not in parsed.tls:
        return {}
    params = {k: v for k, v in parsed.tls.items() if k in TLS_PARAMS}
    params[TLS_SWITCH] = params[TLS_SWITCH].removeprefix("CERT_").lower()
    return params


def tls_options(parsed: SentinelUrl) -> dict[str, Any]:
    """redis-py's TLS keyword arguments for a Sentinel URL (none: no TLS)."""
    params = tls_params(parsed)
    return {"ssl": True, **params} if params else {}


def sentinel_options(
    password: str | None, *, connect_timeout_s: float, socket_timeout_s: float, tls: dict[str, Any]
) -> dict[str, Any]:
    """Connection options for the Sentinels themselves: their password, timeouts (a Sentinel that
    stops answering must not hang a client) and the same TLS as the data nodes."""
    options: dict[str, Any] = {
        "socket_connect_timeout": connect_timeout_s,
        "socket_timeout": socket_timeout_s,
        **tls,
    }
    if password:
        options["password"] = password
    return options


def safe_url(url: str) -> str:
    """``url`` with any password or user name masked, for messages (each address of a Sentinel URL)."""
    if is_sentinel_url(url):
        return SENTINEL_SEPARATOR.join(_safe_one(chunk) for chunk in url.split(SENTINEL_SEPARATOR))
    return _safe_one(url)


def _safe_one(url: str) -> str:
    scheme, _, rest = url.partition("://")
    _, at, host = rest.rpartition("@")
    return f"{scheme}://{'***@' if at else ''}{host}"
