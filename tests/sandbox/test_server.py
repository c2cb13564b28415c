"""The server under load and from other processes; the seed file; the `unsub sandbox` command."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from tests.support.sandbox_fixtures import SandboxClient
from tests.support.waiting import wait_for
from unsub_dev.sandbox.config import load_config
from worker.cli import app

PARTNER_HEADERS = {"x-api-key": "sandbox-api-key"}
INSIDER_HEADERS = {"X-PARTNER-NAME": "sandboxbrand", "X-REQUEST-TOKEN": "sandbox-insider-token"}


def test_ten_thousand_records_from_many_clients_are_all_recorded(sandbox: SandboxClient) -> None:
    token = sandbox.http.post(
        "/cc/oauth2/token",
        params={"grant_type": "client_credentials"},
        auth=("sandbox-partner", "sandbox-partner-secret"),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    ).json()["access_token"]
    partner = {**PARTNER_HEADERS, "Authorization": f"Bearer {token}"}

    def send(batch: int) -> int:
        emails = [f"u{batch}-{i}@load.example" for i in range(250)]
        with httpx.Client(base_url=sandbox.url, timeout=30) as client:
            if batch % 2:
                body = {"emails": emails, "uploader_email": "ops@example.com"}
                return client.post(
                    "/insider/email/v2/unsubscribe", json=body, headers=INSIDER_HEADERS
                ).status_code
            body2 = {"email_addresses": emails, "update_source": "System"}
            url = "/cc/v3/partner/accounts/b18f2myrrrp1/contacts/unsubscribe"
            return client.post(url, json=body2, headers=partner).status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        codes = list(pool.map(send, range(40)))
    assert codes == [200] * 40
    state = sandbox.state()["providers"]
    assert len(state["cc_partner"]["unsubscribes"]) == 5000
    assert len(state["insider"]["unsubscribes"]) == 5000
    assert len(state["cc_partner"]["unsubscribed"]["b18f2myrrrp1"]) == 5000


def test_a_seed_file_is_merged_over_the_built_in_seed(tmp_path: Path) -> None:
    path = tmp_path / "seed.yaml"
    path.write_text(
        "auto_contacts: '@example\\.com$'\neasytools:\n  rate_limit_per_minute: 0\n", encoding="utf-8"
    )
    config = load_config(path)
    assert config.auto_contacts == "@example\\.com$"
    assert config.easytools.rate_limit_per_minute == 0
    assert config.easytools.tokens == ["sandbox-easy-token"]
    assert config.cc_partner.accounts == ["a07e1lxqqqo0", "b18f2myrrrp1"]


def test_a_factory_sandbox_takes_config_overrides(sandbox_factory: object) -> None:
    client = sandbox_factory(easytools={"rate_limit_per_minute": 0})  # type: ignore[operator]
    headers = {"Authorization": "Bearer sandbox-easy-token"}
    codes = {client.http.get("/easytools/api/v1/contacts", headers=headers).status_code for _ in range(120)}
    assert codes == {200}


def test_the_sandbox_command_is_registered() -> None:
    result = CliRunner().invoke(app, ["sandbox", "--help"])
    assert result.exit_code == 0
    assert "--port" in result.output
    assert "--config" in result.output


@pytest.mark.timeout(60)
def test_unsub_sandbox_serves_other_processes_over_http(tmp_path: Path) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = (tmp_path / "sandbox.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker", "sandbox", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        url = f"http://127.0.0.1:{port}/_sandbox/health"

        def up() -> bool:
            try:
                return httpx.get(url).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(
            up,
            timeout_s=30,
            message=lambda: f"unsub sandbox on {port}: {(tmp_path / 'sandbox.log').read_text()}",
        )
        assert httpx.get(url).json() == {"ok": True}
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
