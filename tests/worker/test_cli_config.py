"""`unsub config check`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
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


def check(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = runner.invoke(app, ["config", "check", *args], env=env)
    return result.exit_code, result.output


def write_yaml(tmp_path: Path, data: dict[str, object]) -> Path:
    path = tmp_path / "u.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


BAD_URLS = [
    ("http://localhost:6379/0", "http:// is not a Redis URL scheme"),
    ("redis//localhost", "not a URL"),
    ("not a url", "not a URL"),
    ("rediss://localhost:6380/0", "needs ?ssl_cert_reqs="),
    ("redis://localhost:99999/0", "the port must be a number"),
    ("redis://localhost:6379/zero", "must be a database number"),
]

#: redis-py (the state store, ``redis_url``) opens rediss:// without Celery's ssl_cert_reqs.
CASES = [
    (field, url, says)
    for field in ("broker_url", "result_backend", "redis_url")
    for url, says in BAD_URLS
    if not (field == "redis_url" and url.startswith("rediss://"))
]


@pytest.mark.parametrize(("field", "url", "says"), CASES)
def test_a_redis_url_that_cannot_work_is_one_line_naming_the_field_and_exit_2(
    tmp_path: Path, field: str, url: str, says: str
) -> None:
    config = write_yaml(tmp_path, {field: url})

    code, out = check("--config", str(config))

    assert code == 2
    [line] = [line for line in out.splitlines() if line.strip().startswith("- ")]
    assert line.strip().startswith(f"- {field}: ")
    assert says in line
    assert "Traceback" not in out


@pytest.mark.parametrize(("url", "says"), BAD_URLS)
def test_a_bad_url_in_the_environment_gives_json_that_names_the_field(url: str, says: str) -> None:
    code, out = check("--json", env={"UNSUB_BROKER_URL": url})

    assert code == 2
    shown = json.loads(out)
    assert shown["ok"] is False
    [problem] = shown["problems"]
    assert problem.startswith("broker_url: ")
    assert says in problem


def test_urls_that_work_pass_a_tls_broker_and_a_unix_socket_state_store(tmp_path: Path) -> None:
    config = write_yaml(
        tmp_path,
        {
            "broker_url": "rediss://:broker-pw@redis.example.com:6380/0?ssl_cert_reqs=required",
            "redis_url": "unix:///run/redis/redis.sock?db=2",
        },
    )

    code, out = check("--config", str(config), "--json")

    assert code == 0, out
    shown = json.loads(out)
    assert shown["broker_url"] == "rediss://:***@redis.example.com:6380/0?ssl_cert_reqs=required"
    assert shown["state_redis_url"] == "unix:///run/redis/redis.sock?db=2"
    assert "broker-pw" not in out


def test_malformed_json_in_unsub_connections_is_one_line_with_its_position_and_exit_2() -> None:
    env = {"UNSUB_CONNECTIONS": '[{"name": "wc",]'}

    code, out = check(env=env)
    json_code, json_out = check("--json", env=env)

    assert code == 2
    assert "UNSUB_CONNECTIONS: not valid JSON at line 1, column 16: " in out
    assert len(out.splitlines()) == 2, out
    assert json_code == 2
    [problem] = json.loads(json_out)["problems"]
    assert problem == (
        "UNSUB_CONNECTIONS: not valid JSON at line 1, column 16: "
        "Expecting property name enclosed in double quotes"
    )


def test_a_connection_from_the_environment_is_named_in_its_problems() -> None:
    env = {"UNSUB_CONNECTIONS": json.dumps([{"name": "wc-env", "type": "whatcounts"}])}

    code, out = check("--json", env=env)

    assert code == 2
    assert "connections[wc-env].realm: Field required" in json.loads(out)["problems"]


@pytest.mark.parametrize(
    ("name", "text", "says"),
    [
        (
            "u.yaml",
            "broker_url: redis://x\nconnections:\n  - name: wc\n    password: 'abc\n",
            "at line 5, column 1",
        ),
        ("u.yaml", "connections:\n  - name: wc\n   type: whatcounts\n", "at line 3, column"),
        ("u.json", '{"broker_url": "redis://x",\n "connections": [}', "at line 2, column 18"),
        ("u.toml", 'broker_url = "redis://x"\nflush_interval_s = = 2\n', "at line 2, column 20"),
    ],
)
def test_a_config_file_that_does_not_parse_is_named_with_line_and_column(
    tmp_path: Path, name: str, text: str, says: str
) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")

    code, out = check("--config", str(path))
    json_code, json_out = check("--config", str(path), "--json")

    assert code == json_code == 2
    assert says in out
    [problem] = json.loads(json_out)["problems"]
    assert problem.startswith(f"config file {path}: not valid ")
    assert says in problem
    assert "abc" not in out


def test_an_unreadable_config_file_still_gives_json() -> None:
    code, out = check("--config", "/nonexistent/unsub.yaml", "--json")

    assert code == 2
    assert json.loads(out) == {
        "ok": False,
        "config_file": "/nonexistent/unsub.yaml",
        "problems": ["config file /nonexistent/unsub.yaml: cannot read it (No such file or directory)"],
    }


@pytest.mark.parametrize(
    ("base_url", "where"),
    [
        ("https://api.whatcounts.com/bin/api_web?r=myrealm&p=wc-SUPERSECRET", "p="),
        ("http://admin:wc-SUPERSECRET@host/whatcounts", "user:password@"),
    ],
)
def test_credentials_inside_a_base_url_are_refused_with_where_they_belong(
    tmp_path: Path, base_url: str, where: str
) -> None:
    connection = {"name": "wc", "type": "whatcounts", "base_url": base_url, "realm": "r", "password": "x"}
    config = write_yaml(tmp_path, {"connections": [connection]})

    code, out = check("--config", str(config))
    _, json_out = check("--config", str(config), "--json")

    assert code == 2
    assert f"connections[wc].base_url: holds credentials ({where})" in out
    assert "the connection's secret fields" in out
    assert "SUPERSECRET" not in out + json_out


def test_a_valid_config_as_json_carries_the_same_facts_as_the_text(tmp_path: Path) -> None:
    example = Path(__file__).parents[2] / "worker" / "examples" / "sandbox.yaml"

    code, text = check("--config", str(example))
    _, out = check("--config", str(example), "--json")

    shown = json.loads(out)
    assert code == 0
    assert shown["ok"] is True
    assert shown["config_file"] == str(example)
    assert shown["warnings"] == []
    for row in shown["connections"]:
        assert row["name"] in text
        assert row["base_url"] in text
        assert all(str(v) in text for v in row["options"].values() if v is not None)
    assert "sandbox-pass" not in out + text


def test_no_connections_is_a_warning_that_says_how_to_give_them() -> None:
    code, text = check()
    _, out = check("--json")

    assert code == 0
    assert "no connections configured" in text
    assert "UNSUB_CONFIG" in text
    assert json.loads(out)["warnings"] == ["no connections configured: nothing would be delivered"]


#: Every user-facing command that reads the settings (``config check`` has its own tests above).
COMMANDS_READING_SETTINGS = [
    ["worker"],
    ["scheduler"],
    ["flower"],
    ["metrics"],
    ["stats"],
    ["status", "r-1"],
    ["health"],
    ["dlq", "list"],
    ["send", "jane@example.com"],
    ["import", "optouts.csv"],
    ["demo"],
]
#: A setting that cannot work (with a secret in it), and the field its one problem line names.
BAD_SETTINGS = {
    "http_broker_url": ({"UNSUB_BROKER_URL": "http://:s3cr3t-pw@localhost:6379/0"}, "broker_url"),
    "tls_url_without_cert_reqs": ({"UNSUB_BROKER_URL": "rediss://:s3cr3t-pw@localhost:6380/0"}, "broker_url"),
    "malformed_env_json": (
        {"UNSUB_CONNECTIONS": '[{"name": "wc", "password": "s3cr3t-pw"'},
        "UNSUB_CONNECTIONS",
    ),
    "port_out_of_range": ({"UNSUB_METRICS_PORT": "99999"}, "metrics_port"),
}


@pytest.mark.parametrize("bad", list(BAD_SETTINGS), ids=list(BAD_SETTINGS))
@pytest.mark.parametrize("command", COMMANDS_READING_SETTINGS, ids=lambda c: "_".join(c))
def test_every_command_refuses_a_setting_that_cannot_work_with_one_line_naming_the_field(
    command: list[str], bad: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env, field = BAD_SETTINGS[bad]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "optouts.csv").write_text("email\njane@example.com\n", encoding="utf-8")

    result = runner.invoke(app, command, env=env)

    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    [line] = [line for line in result.output.splitlines() if line.startswith("  - ")]
    assert line.startswith(f"  - {field}: "), line
    assert not any(part in result.output for part in ("s3cr3t-pw", "localhost:63", "99999"))
    assert not (tmp_path / "optouts.csv.rejects.jsonl").exists()


def test_a_broker_url_that_is_not_redis_says_which_schemes_work() -> None:
    result = runner.invoke(app, ["stats"], env={"UNSUB_BROKER_URL": "http://localhost:6379/0"})

    assert result.exit_code == 2, result.output
    assert "broker_url: http:// is not a Redis URL scheme" in result.output


SENTINEL_URL = "sentinel://:data-pw@s1:26379;sentinel://:data-pw@s2:26379;sentinel://:data-pw@s3:26379/0"


@pytest.mark.parametrize("field", ["broker_url", "result_backend", "redis_url"])
def test_a_sentinel_url_without_a_master_name_is_one_line_naming_sentinel_master_and_exit_2(
    tmp_path: Path, field: str
) -> None:
    config = write_yaml(tmp_path, {field: SENTINEL_URL})

    code, out = check("--config", str(config))

    assert code == 2
    [line] = [line for line in out.splitlines() if line.strip().startswith("- ")]
    assert line.strip().startswith("- sentinel_master: required: ")
    assert f"{field} is a sentinel:// URL" in line
    assert "data-pw" not in out


def test_a_sentinel_configuration_passes_with_every_password_masked(tmp_path: Path) -> None:
    config = write_yaml(
        tmp_path,
        {
            "broker_url": SENTINEL_URL,
            "sentinel_master": "unsub",
            "sentinel_password": "sentinel-pw",
            "publish_replicas": 1,
        },
    )

    code, out = check("--config", str(config), "--json")

    assert code == 0, out
    shown = json.loads(out)
    assert shown["broker_url"] == SENTINEL_URL.replace("data-pw", "***")
    assert shown["state_redis_url"] == shown["broker_url"]
    assert (shown["sentinel_master"], shown["publish_replicas"]) == ("unsub", 1)
    assert "data-pw" not in out
    assert "sentinel-pw" not in out
