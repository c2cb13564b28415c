"""worker.urls: which Redis URLs each client can open, credentials in provider URLs, masking."""

from __future__ import annotations

import re

import pytest

from worker.urls import REDIS_SCHEMES, RedisUse, check_provider_url, check_redis_url, credentials_in, mask_url

WORKING = [
    "redis://localhost:6379/0",
    "redis://localhost",
    "redis://:s3cret@redis.internal:6380/2",
    "redis://user:s3cret@[::1]:6379/1",
    "rediss://redis.example.com:6380/0?ssl_cert_reqs=required",
    "rediss://redis.example.com:6380/0?ssl_cert_reqs=none",
    "sentinel://s1:26379;sentinel://s2:26379;sentinel://s3:26379/0",
    "sentinel://:data-pw@s1:26379;sentinel://:data-pw@s2/2",
    "sentinel://s1.example.com:26380/0?ssl_cert_reqs=required&ssl_ca_certs=/etc/ca.pem",
]


@pytest.mark.parametrize("url", WORKING)
def test_urls_both_celery_and_redis_py_open_are_accepted_for_every_use(url: str) -> None:
    for use in RedisUse:
        assert check_redis_url(url, use) == url


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://localhost:6379/0", "http:// is not a Redis URL scheme: use redis://, rediss://"),
        ("redis//localhost", "not a URL"),
        ("not a url", "not a URL"),
        ("", "not a URL"),
        ("redis://", "names no host"),
        ("redis://localhost:70000/0", "the port must be a number from 1 to 65535"),
        ("redis://localhost:0/0", "the port must be a number from 1 to 65535"),
        ("redis://localhost:six/0", "the port must be a number from 1 to 65535"),
        ("redis://localhost:6379/x", "must be a database number"),
        ("redis://localhost:6379/0/1", "must be a database number"),
        ("redis://localhost:6379/0?ssl_cert_reqs=required", "TLS parameters need rediss://"),
        ("rediss://localhost:6380/0", "needs ?ssl_cert_reqs= one of required, optional, none"),
        ("rediss://localhost:6380/0?ssl_cert_reqs=maybe", "needs ?ssl_cert_reqs="),
        ("unix:///run/redis.sock", "Celery cannot open unix:// sockets"),
        ("redis://[::1/0", "not a URL"),
        (
            "sentinel://s1:26379;redis://s2:6379/0",
            "every address must read sentinel://HOST[:PORT], separated by ';'",
        ),
        ("sentinel://s1:26379;sentinel://", "names no host"),
        ("sentinel://s1:26379;sentinel://s2:99999", "the port must be a number from 1 to 65535"),
        ("sentinel://s1/1;sentinel://s2/2", "the addresses disagree on the DB (/N)"),
        ("sentinel://:a@s1;sentinel://:b@s2/0", "the addresses disagree on the password"),
        ("sentinel://s1/0?ssl_ca_certs=/etc/ca.pem", "needs ?ssl_cert_reqs= one of required, optional, none"),
        ("sentinel://s1/0?ssl_cert_reqs=maybe", "must be one of required, optional, none"),
    ],
)
def test_a_url_celery_cannot_open_is_refused_with_what_to_write_instead(url: str, says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        check_redis_url(url, RedisUse.CELERY)


def test_no_refusal_echoes_the_url_or_its_password() -> None:
    with pytest.raises(ValueError, match="ssl_cert_reqs") as caught:
        check_redis_url("rediss://:hunter2-secret@redis.example.com:6380/0", RedisUse.CELERY)

    assert "hunter2" not in str(caught.value)
    assert "redis.example.com" not in str(caught.value)


def test_the_state_store_takes_unix_sockets_and_tls_without_celerys_parameter() -> None:
    assert check_redis_url("unix:///run/redis/redis.sock?db=3", RedisUse.STATE)
    assert check_redis_url("rediss://redis.example.com:6380/0", RedisUse.STATE)
    with pytest.raises(ValueError, match="names a socket path"):
        check_redis_url("unix://run/redis.sock", RedisUse.STATE)
    with pytest.raises(ValueError, match="database number"):
        check_redis_url("unix:///run/redis.sock?db=x", RedisUse.STATE)


def test_every_scheme_row_names_the_clients_that_open_it() -> None:
    assert set(REDIS_SCHEMES) == {"redis", "rediss", "unix", "sentinel"}
    assert all(row.uses for row in REDIS_SCHEMES.values())
    assert all(row.instead for row in REDIS_SCHEMES.values() if row.uses != frozenset(RedisUse))


@pytest.mark.parametrize(
    ("url", "found"),
    [
        ("https://api.whatcounts.com/bin/api_web?r=myrealm&p=wc-SUPERSECRET", ["p="]),
        ("http://admin:secret@host/api", ["user:password@"]),
        ("https://x.example.com/v1?API_KEY=k&token=t", ["api_key=", "token="]),
        ("https://api.whatcounts.com", []),
    ],
)
def test_credentials_in_a_provider_url_are_found_by_where_they_sit(url: str, found: list[str]) -> None:
    assert credentials_in(url) == found


def test_a_provider_url_with_credentials_is_refused_with_where_they_belong() -> None:
    with pytest.raises(ValueError, match="holds credentials") as caught:
        check_provider_url("https://api.whatcounts.com/bin/api_web?r=realm&p=wc-SUPERSECRET", base=True)

    assert "wc-SUPERSECRET" not in str(caught.value)
    assert "the connection's secret fields" in str(caught.value)
    assert "<field>_file" in str(caught.value)


def test_a_base_url_with_a_query_is_refused_but_a_token_url_may_carry_one() -> None:
    with pytest.raises(ValueError, match="must not carry a query"):
        check_provider_url("https://api.whatcounts.com/bin/api_web?r=realm", base=True)

    assert check_provider_url("https://auth.example.com/token?scope=x", base=False)


def test_masking_hides_passwords_and_credential_parameters_and_keeps_the_rest() -> None:
    assert mask_url("redis://:pw@localhost:6379/0") == "redis://:***@localhost:6379/0"
    assert mask_url("redis://u:pw@[::1]:6379/1") == "redis://u:***@[::1]:6379/1"
    assert mask_url("https://h/bin/api_web?r=realm&p=wc-SECRET") == "https://h/bin/api_web?r=realm&p=***"
    assert mask_url("redis://localhost:6379/0") == "redis://localhost:6379/0"
    assert mask_url("redis://[::1") == "***"


def test_masking_a_sentinel_url_hides_the_password_of_every_address() -> None:
    url = "sentinel://:pw@s1:26379;sentinel://:pw@s2:26379/0"

    masked = mask_url(url)

    assert masked == "sentinel://:***@s1:26379;sentinel://:***@s2:26379/0"


def test_a_sentinel_refusal_echoes_no_password() -> None:
    with pytest.raises(ValueError, match="disagree") as caught:
        check_redis_url("sentinel://:hunter2@s1;sentinel://:other-secret@s2/0", RedisUse.STATE)

    assert "hunter2" not in str(caught.value)
    assert "other-secret" not in str(caught.value)
