"""Rotating refresh tokens on a real Redis: which one is spent, what is stored, re-authorisations."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import redis

from tests.worker.adapters.conftest import contacts_conn
from tests.worker.adapters.token_server import LocalTokenServer
from worker import keys
from worker.adapters.base import AdapterDeps
from worker.adapters.cc_contacts import contacts_fetch
from worker.adapters.refresh_tokens import StoredRefreshToken, fingerprint, read_stored
from worker.adapters.token_endpoints import refresh_if_due
from worker.errors import AuthenticationError

OLD_GRANT = "old-grant-refresh-0123456789"
NEW_GRANT = "new-grant-refresh-0123456789"


@pytest.fixture
def server() -> Iterator[LocalTokenServer]:
    with LocalTokenServer(prefix="contacts-access", delay_s=0, rotate=True) as running:
        yield running


def renew(redis_client: redis.Redis, server: LocalTokenServer, configured: str) -> bool:
    """One refresh of connection ``ccc`` as the scheduler makes it, the access token first forgotten."""
    redis_client.delete(keys.token("ccc"))
    conn = contacts_conn(token_url=server.url, refresh_token=configured)
    with httpx.Client(timeout=5) as client:
        return refresh_if_due(conn, AdapterDeps(redis=redis_client), contacts_fetch, client=client)


def test_the_rotated_token_is_stored_with_the_fingerprint_of_the_configured_one_and_spent_next(
    redis_client: redis.Redis, server: LocalTokenServer
) -> None:
    renew(redis_client, server, OLD_GRANT)
    renew(redis_client, server, OLD_GRANT)

    assert server.refresh_tokens_sent == [OLD_GRANT, "rotated-refresh-1"]
    assert read_stored(redis_client, "ccc") == StoredRefreshToken("rotated-refresh-2", fingerprint(OLD_GRANT))
    assert OLD_GRANT not in (redis_client.get(keys.refresh_token("ccc")) or "")


def test_a_new_refresh_token_in_the_settings_after_a_reauthorisation_wins_over_the_stored_one(
    redis_client: redis.Redis, server: LocalTokenServer
) -> None:
    renew(redis_client, server, OLD_GRANT)
    server.valid_refresh = NEW_GRANT  # the operator re-authorised and configured the new grant's token

    renewed = renew(redis_client, server, NEW_GRANT)
    renew(redis_client, server, NEW_GRANT)

    assert renewed is True
    assert server.refresh_tokens_sent == [OLD_GRANT, NEW_GRANT, "rotated-refresh-2"]
    assert read_stored(redis_client, "ccc") == StoredRefreshToken("rotated-refresh-3", fingerprint(NEW_GRANT))


def test_a_stored_token_from_before_fingerprints_were_kept_still_wins_and_gets_one(
    redis_client: redis.Redis, server: LocalTokenServer
) -> None:
    redis_client.set(keys.refresh_token("ccc"), "legacy-rotated-0123456789")
    server.valid_refresh = "legacy-rotated-0123456789"

    renew(redis_client, server, OLD_GRANT)

    assert server.refresh_tokens_sent == ["legacy-rotated-0123456789"]
    assert read_stored(redis_client, "ccc") == StoredRefreshToken("rotated-refresh-1", fingerprint(OLD_GRANT))


def test_a_refused_stored_token_is_not_followed_by_a_second_try_with_the_configured_one(
    redis_client: redis.Redis, server: LocalTokenServer
) -> None:
    renew(redis_client, server, OLD_GRANT)
    server.valid_refresh = "revoked-chain"  # the provider revoked the grant: its whole chain is dead

    with pytest.raises(AuthenticationError, match="invalid_grant"):
        renew(redis_client, server, OLD_GRANT)

    assert server.refresh_tokens_sent == [OLD_GRANT, "rotated-refresh-1"]
    assert read_stored(redis_client, "ccc") == StoredRefreshToken("rotated-refresh-1", fingerprint(OLD_GRANT))


def test_a_refused_new_configured_token_leaves_the_stored_chain_in_place(
    redis_client: redis.Redis, server: LocalTokenServer
) -> None:
    renew(redis_client, server, OLD_GRANT)

    with pytest.raises(AuthenticationError):
        renew(redis_client, server, "mistyped-refresh-0123456789")
    renew(redis_client, server, OLD_GRANT)  # the operator puts the old value back

    assert server.refresh_tokens_sent == [OLD_GRANT, "mistyped-refresh-0123456789", "rotated-refresh-1"]
    assert read_stored(redis_client, "ccc") == StoredRefreshToken("rotated-refresh-3", fingerprint(OLD_GRANT))


@pytest.mark.parametrize(
    "raw", ["plain-token-0123", '{"other": 1}', '{"refresh_token": ""}', "[1, 2]", "12345", "{broken"]
)
def test_a_stored_value_that_is_not_a_token_record_reads_as_a_bare_token_of_unknown_origin(raw: str) -> None:
    stored = StoredRefreshToken.parse(raw)

    assert stored == StoredRefreshToken(raw, None)
    assert stored.descends_from(NEW_GRANT)


def test_a_record_round_trips_through_its_text() -> None:
    record = StoredRefreshToken("rotated-0123", fingerprint(OLD_GRANT))

    assert StoredRefreshToken.parse(record.text()) == record
    assert StoredRefreshToken.parse(record.text().encode()) == record
    assert not record.descends_from(NEW_GRANT)
