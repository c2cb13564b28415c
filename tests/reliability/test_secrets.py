"""Scenario 7: after everything above, no secret and no full address appears in any log.

Runs last (see ``conftest.pytest_collection_modifyitems``). It scans every log file the session's
stacks wrote, plus those of a run of its own that touches every connection type and makes the
sandbox issue, expire and re-issue Constant Contact tokens, so it checks something even alone.
"""

from __future__ import annotations

import re

import pytest

from tests.reliability.conftest import Collected, sandbox_tokens, wait_finished
from tests.support.sandbox_fixtures import SandboxClient
from tests.support.stacks import StackFactory
from tests.support.waiting import wait_for
from unsub_dev.localstack.config import example_config

pytestmark = [pytest.mark.reliability, pytest.mark.integration, pytest.mark.timeout(180)]

SECRET_FIELDS = {"api_key", "client_secret", "refresh_token", "password", "token"}
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+")
#: An address with a real domain (``redis://:**@127.0.0.1`` is a masked URL, not an address).
EMAIL = re.compile(r"[A-Za-z0-9._%+*-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")


def config_secrets() -> set[str]:
    return {str(c[f]) for c in example_config()["connections"] for f in SECRET_FIELDS if c.get(f)}


def test_no_log_line_holds_a_secret_a_token_or_an_unmasked_address(
    rstack: StackFactory, sandbox: SandboxClient, collected: Collected
) -> None:
    sandbox.seed(auto_contacts=True)
    sandbox.faults(cc_partner={"token_ttl_s": 3})
    stack = rstack(settings_overrides={"log_level": "DEBUG"})
    stack.start_worker("w1", concurrency=2)
    stack.start_scheduler()
    emails = {f"secret-{i}": f"secret.person{i}@example.com" for i in range(30)}
    with stack.producer() as producer:
        producer.publish_many({"request_id": r, "email": e} for r, e in emails.items())
    wait_for(lambda: sandbox.state("cc_partner")["token_requests"] >= 1, timeout_s=60, message="a CC token")
    sandbox.expire_tokens("cc_partner")
    with stack.producer() as producer:
        producer.publish_many({"request_id": f"{r}-again", "email": e} for r, e in emails.items())
    wait_finished(stack, [*emails, *(f"{r}-again" for r in emails)], timeout_s=120)
    stack.stop()
    tokens = collected.issued_tokens | sandbox_tokens(sandbox)
    assert tokens, "the sandbox issued tokens that the scan must look for"

    secrets = config_secrets() | tokens
    assert {"sandbox-api-key", "sandbox-partner-secret", "sandbox-pass"} <= secrets
    files = collected.log_files()
    assert files, "there are logs to scan"
    leaks: list[str] = []
    for path in files:
        text = path.read_text(errors="replace")
        leaks += [f"{path.name}: secret {s[:6]}..." for s in secrets if s in text]
        leaks += [f"{path.name}: JWT {m[:12]}..." for m in set(JWT.findall(text))]
        leaks += [f"{path.name}: address {m}" for m in set(EMAIL.findall(text)) if "***" not in m]
    print(f"secrets scan: {len(files)} log files, {len(secrets)} secrets and tokens looked for")
    assert not leaks, "\n".join(sorted(set(leaks))[:30])
