"""A provider error an operator must act on says so everywhere they look: the log line, `unsub status`
and, when the record finally gives up, its dead letter carry the HTTP status and the provider's words.

The case from the field: Constant Contact answers 404 for an unknown ``encoded_account_id``; it was
reported as "refused the credentials even with a fresh token", with no status and no text.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import redis
import yaml
from typer.testing import CliRunner

from tests.support.intake import take_in
from tests.support.sandbox_fixtures import SandboxClient
from tests.worker.adapters.sandbox_support import connection_data
from worker import keys
from worker.cli import app
from worker.logs import configure_logging
from worker.pipeline import deadletters, retry
from worker.pipeline.delivery import drain
from worker.pipeline.runtime import Runtime
from worker.settings import load_settings

UNKNOWN_ACCOUNT = "zz9nosuchacct"
SAYS = (
    "HTTP 404 from Constant Contact unsubscribe: account not found: check encoded_account_id "
    f"(partner.api.not_found: Account {UNKNOWN_ACCOUNT} was not found.)"
)


def test_constant_contacts_404_for_an_unknown_account_is_named_in_the_log_status_and_dead_letter(
    sandbox: SandboxClient, redis_client: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    conn = connection_data(sandbox, "cc-partner", encoded_account_id=UNKNOWN_ACCOUNT)
    conn["retry"] = {"max_age_s": 1}
    settings = load_settings(broker_url=redis_url, connections=[conn])
    rt = Runtime(settings=settings, redis=redis_client, send_task=lambda name, args, queue, **_: None)
    config = tmp_path / "u.yaml"
    config.write_text(yaml.safe_dump({"broker_url": redis_url, "connections": [conn]}), encoding="utf-8")
    payload = [{"email": "jane@example.com", "request_id": "r-404", "connections": ["cc-partner"]}]
    take_in(rt, payload, origin="t")
    log = io.StringIO()
    configure_logging("INFO", "json", log)

    try:
        drain(rt, "cc-partner")
        shown = CliRunner().invoke(app, ["status", "r-404", "--config", str(config), "--json"])
        time.sleep(1.1)  # past the record's maximum age: the next refusal dead-letters it
        retry.promote_due(redis_client, "cc-partner", now=time.time() + 10_000)
        redis_client.delete(keys.breaker("cc-partner"))
        drain(rt, "cc-partner")
    finally:
        rt.close()

    events = [json.loads(line) for line in log.getvalue().splitlines()]
    errors = [e for e in events if e["level"] == "error"]  # the breaker opened in each drain
    assert [e["detail"] for e in errors] == [SAYS, SAYS]
    assert all("check this connection's credentials" in e["event"] for e in errors)
    [delivery] = json.loads(shown.stdout)["r-404"]["deliveries"]
    assert (delivery["state"], delivery["reason"], delivery["message"]) == ("retrying", "auth_failed", SAYS)
    [letter] = deadletters.scan(redis_client, deadletters.Filter())
    assert letter.reason == "auth_failed"
    assert SAYS in letter.message
    assert "jane@example.com" not in log.getvalue()
    assert "sandbox-api-key" not in log.getvalue() + letter.message
