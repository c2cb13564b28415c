"""The naive design the throughput benchmark compares against: one Celery task per record, and in it
one HTTP call to the provider (two for easy.tools and for Constant Contact's contacts API, the same
calls the pipeline makes for those one-record-at-a-time providers), with httpx.

No intake, no buffer, no batching, no retries, no status records: the least work that still carries
each record to its provider. Started by ``bench/throughput.py`` as a real worker process::

    NAIVE_BROKER_URL=redis://... NAIVE_CONFIG=unsub.yaml \
        celery -A bench.naive_app worker -Q naive --concurrency 2 --pool prefork

``NAIVE_CONFIG`` is the same unsub config the pipeline's workers use (credentials and base URLs of
the sandbox). Each task counts its answer in Redis (``naive:done``, ``naive:status``), so the
benchmark knows when every record was carried and how the provider answered.
"""

from __future__ import annotations

import os
from typing import Any, Final
from urllib.parse import quote

import httpx
from celery import Celery

QUEUE: Final = "naive"
TASK: Final = "naive.unsubscribe"
DONE_KEY: Final = "naive:done"
STATUS_KEY: Final = "naive:status"
CC_INCLUDE: Final = "custom_fields,list_memberships,phone_numbers,street_addresses,taggings,notes"

app = Celery("naive", broker=os.environ.get("NAIVE_BROKER_URL", "redis://127.0.0.1:6379/9"))
app.conf.update(
    task_default_queue=QUEUE,
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)

_client: httpx.Client | None = None
_redis: Any = None
_connections: dict[str, Any] = {}
_tokens: dict[str, str] = {}


def _setup() -> tuple[httpx.Client, Any]:
    global _client, _redis
    if _client is None:
        import redis

        from worker.settings import load_settings

        settings = load_settings(os.environ["NAIVE_CONFIG"])
        _connections.update({c.name: c for c in settings.connections})
        _client = httpx.Client(timeout=30.0)
        _redis = redis.Redis.from_url(app.conf.broker_url)
    return _client, _redis


def _token(name: str, conn: Any, http: httpx.Client) -> str:
    """One access token per process and connection (CC's OAuth endpoints), fetched on first use."""
    if name not in _tokens:
        auth = (conn.client_id, conn.client_secret.get_secret_value())
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        if conn.type == "cc_partner":
            reply = http.post(
                str(conn.token_url), params={"grant_type": "client_credentials"}, auth=auth, headers=form
            )
        else:
            body = {"grant_type": "refresh_token", "refresh_token": conn.refresh_token.get_secret_value()}
            reply = http.post(str(conn.token_url), data=body, auth=auth)
        reply.raise_for_status()
        _tokens[name] = reply.json()["access_token"]
    return _tokens[name]


def _send(http: httpx.Client, name: str, email: str, customer_key: str | None) -> int:
    """Carry one record to connection ``name``; returns the last HTTP status."""
    conn = _connections[name]
    base = str(conn.base_url).rstrip("/")
    kind = conn.type
    if kind == "insider":
        headers = {
            "X-PARTNER-NAME": conn.partner_name.lower(),
            "X-REQUEST-TOKEN": conn.token.get_secret_value(),
        }
        body = {"emails": [email], "uploader_email": conn.uploader_email}
        return http.post(f"{base}/email/v2/unsubscribe", json=body, headers=headers).status_code
    if kind == "whatcounts":
        params = {"r": conn.realm, "p": conn.password.get_secret_value(), "c": "unsub"}
        params["list_id"] = conn.default_list_id
        params["data"] = (
            f"email,customer_key^{email},{customer_key}" if conn.customer_key_required else (f"email^{email}")
        )
        return http.get(f"{base}/bin/api_web", params=params).status_code
    if kind == "easytools":
        headers = {"Authorization": f"Bearer {conn.token.get_secret_value()}"}
        found = http.get(f"{base}/contacts", params={"search": email}, headers=headers)
        items = found.json().get("data") or found.json().get("contacts") or []
        if found.status_code != 200 or not items:
            return found.status_code if found.status_code != 200 else 404
        return http.post(
            f"{base}/contacts/{quote(items[0]['uuid'], safe='')}/unsubscribe", headers=headers
        ).status_code
    bearer = {"Authorization": f"Bearer {_token(name, conn, http)}"}
    if kind == "cc_partner":
        url = f"{base}/partner/accounts/{conn.encoded_account_id}/contacts/unsubscribe"
        body = {"email_addresses": [email], "update_source": "Contact"}
        return http.post(
            url, json=body, headers={**bearer, "x-api-key": conn.api_key.get_secret_value()}
        ).status_code
    # cc_contacts: find the whole contact (the search's include=), write it back unsubscribed (a PUT
    # replaces it all): the pipeline's two calls
    params = {"email": email, "status": "all", "include": CC_INCLUDE}
    found = http.get(f"{base}/contacts", params=params, headers=bearer)
    contacts = found.json().get("contacts") or [] if found.status_code == 200 else []
    if not contacts:
        return found.status_code if found.status_code != 200 else 404
    contact = contacts[0]
    url = f"{base}/contacts/{quote(contact['contact_id'], safe='')}"
    address = {**contact["email_address"], "permission_to_send": "unsubscribed"}
    put = {
        k: v
        for k, v in contact.items()
        if k in ("first_name", "last_name", "custom_fields", "list_memberships")
    }
    put.update(email_address={"address": address["address"], "permission_to_send": "unsubscribed"})
    put["update_source"] = "Contact"
    return http.put(url, json=put, headers=bearer).status_code


@app.task(name=TASK)  # type: ignore[misc]
def unsubscribe(connection: str, email: str, customer_key: str | None = None) -> None:
    http, redis_client = _setup()
    status = _send(http, connection, email, customer_key)
    pipe = redis_client.pipeline(transaction=False)
    pipe.incr(DONE_KEY)
    pipe.hincrby(STATUS_KEY, f"{connection}:{status}", 1)
    pipe.execute()
