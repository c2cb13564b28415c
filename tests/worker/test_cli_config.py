"""`unsub config check`."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from worker.cli import app

runner = CliRunner()


def test_a_valid_config_prints_connections_with_secrets_masked(tmp_path: Path) -> None:
    path = tmp_path / "u.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "broker_url": "redis://:redis-pass@localhost:6379/0",
                "connections": [
                    {
                        "name": "wc-main",
                        "type": "whatcounts",
                        "base_url": "https://api.whatcounts.com",
                        "realm": "acme",
                        "password": "hunter2-secret",
                    }
                ],
            }
        ),
        encoding="utf-8",
    )

    result = runner.invoke(app, ["config", "check", "--config", str(path)])

    assert result.exit_code == 0, result.output
    assert "wc-main" in result.output
    assert "hunter2-secret" not in result.output
    assert "redis-pass" not in result.output
    assert "configuration OK" in result.output


def test_an_invalid_config_lists_every_problem_and_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "u.yaml"
    path.write_text(
        yaml.safe_dump({"connections": [{"name": "wc", "type": "whatcounts", "password": "pw-123456"}]}),
        encoding="utf-8",
    )

    result = runner.invoke(app, ["config", "check", "--config", str(path)])

    assert result.exit_code == 2
    assert "connections[wc].base_url" in result.output
    assert "connections[wc].realm" in result.output
    assert "pw-123456" not in result.output


def test_every_command_has_help() -> None:
    result = runner.invoke(app, ["--help"])

    assert result.exit_code == 0
    for command in ("config", "worker"):
        assert command in result.output
        assert runner.invoke(app, [command, "--help"]).exit_code == 0
