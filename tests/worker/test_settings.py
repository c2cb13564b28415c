"""Settings: one typed object from environment, config file and secret files."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from worker import providers
from worker.errors import ConfigError
from worker.settings import load_settings

WHATCOUNTS = {
    "name": "wc-main",
    "type": "whatcounts",
    "base_url": "https://api.whatcounts.com",
    "realm": "acme",
    "password": "hunter2-secret",
}


def write(tmp_path: Path, data: dict[str, object], name: str = "unsub.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_defaults_point_at_a_local_redis() -> None:
    settings = load_settings()

    assert settings.broker_url == "redis://localhost:6379/0"
    assert settings.backend_url == settings.broker_url
    assert settings.state_redis_url == settings.broker_url
    assert settings.connections == []


def test_environment_variables_with_the_prefix_override_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write(tmp_path, {"broker_url": "redis://from-file:6379/0", "flush_interval_s": 2})
    monkeypatch.setenv("UNSUB_BROKER_URL", "redis://from-env:6379/1")

    settings = load_settings(config)

    assert settings.broker_url == "redis://from-env:6379/1"
    assert settings.flush_interval_s == 2


def test_the_config_file_can_come_from_unsub_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNSUB_CONFIG", str(write(tmp_path, {"connections": [WHATCOUNTS]})))

    settings = load_settings()

    assert settings.connection("wc-main").type == "whatcounts"


def test_several_connections_of_one_provider_type_are_allowed(tmp_path: Path) -> None:
    second = {**WHATCOUNTS, "name": "wc-client-b", "realm": "client-b"}
    settings = load_settings(write(tmp_path, {"connections": [WHATCOUNTS, second]}))

    assert [c.name for c in settings.connections] == ["wc-main", "wc-client-b"]


def test_json_and_toml_files_work_too(tmp_path: Path) -> None:
    import json

    json_path = tmp_path / "u.json"
    json_path.write_text(json.dumps({"flush_interval_s": 3}), encoding="utf-8")
    toml_path = tmp_path / "u.toml"
    toml_path.write_text("flush_interval_s = 4\n", encoding="utf-8")

    assert load_settings(json_path).flush_interval_s == 3
    assert load_settings(toml_path).flush_interval_s == 4


def test_secrets_are_read_from_file_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "wc-password").write_text("from-a-kubernetes-secret\n", encoding="utf-8")
    (tmp_path / "flower").write_text("flower-pass\n", encoding="utf-8")
    connection = {k: v for k, v in WHATCOUNTS.items() if k != "password"} | {"password_file": "wc-password"}
    monkeypatch.setenv("UNSUB_FLOWER_PASSWORD_FILE", str(tmp_path / "flower"))

    settings = load_settings(write(tmp_path, {"connections": [connection]}))

    conn = settings.connection("wc-main")
    assert conn.password.get_secret_value() == "from-a-kubernetes-secret"  # type: ignore[union-attr]
    assert settings.flower_password is not None
    assert settings.flower_password.get_secret_value() == "flower-pass"


def test_an_unreadable_secret_file_is_named(tmp_path: Path) -> None:
    connection = {k: v for k, v in WHATCOUNTS.items() if k != "password"} | {"password_file": "missing"}

    with pytest.raises(ConfigError, match=r"connections\[0\]\.password_file: cannot read secret file"):
        load_settings(write(tmp_path, {"connections": [connection]}))


def test_a_bad_config_is_refused_with_messages_that_name_each_field(tmp_path: Path) -> None:
    bad = [
        {**WHATCOUNTS, "realm": ""},
        {"name": "ins", "type": "insider", "base_url": "https://x", "token": "t", "uploader_email": "nope"},
        {"name": "odd", "type": "mailchimp", "base_url": "https://x"},
    ]
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, {"connections": bad, "flush_interval_s": 0}))

    problems = caught.value.problems
    assert any(p.startswith("connections[wc-main].realm:") for p in problems), problems
    assert any(p.startswith("connections[ins].partner_name:") for p in problems), problems
    assert any(p.startswith("connections[ins].uploader_email:") for p in problems), problems
    assert any(p.startswith("connections[odd].type: must be one of") for p in problems), problems
    assert any(p.startswith("flush_interval_s:") for p in problems), problems


def test_duplicate_connection_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="used twice"):
        load_settings(write(tmp_path, {"connections": [WHATCOUNTS, WHATCOUNTS]}))


def test_secrets_never_appear_in_errors_or_reprs(tmp_path: Path) -> None:
    connection = {**WHATCOUNTS, "base_url": "not a url", "password": 12345678}
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, {"connections": [connection]}))
    assert "12345678" not in str(caught.value)

    settings = load_settings(write(tmp_path, {"connections": [WHATCOUNTS]}))
    assert "hunter2-secret" not in repr(settings)
    assert "hunter2-secret" not in str(settings.connection("wc-main"))


def test_a_bad_rate_limit_is_explained(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"connections\[wc-main\]\.rate_limit: .*not a rate limit"):
        load_settings(write(tmp_path, {"connections": [{**WHATCOUNTS, "rate_limit": "fast"}]}))


def test_insider_partner_names_are_lower_cased(tmp_path: Path) -> None:
    insider = {
        "name": "ins",
        "type": "insider",
        "base_url": "https://contact.useinsider.com",
        "partner_name": "MyBrand",
        "token": "t0k3n-value",
        "uploader_email": "ops@example.com",
    }
    settings = load_settings(write(tmp_path, {"connections": [insider]}))

    assert settings.connection("ins").partner_name == "mybrand"  # type: ignore[union-attr]


def test_the_shipped_sandbox_example_is_valid() -> None:
    example = Path(__file__).parents[2] / "worker" / "examples" / "sandbox.yaml"

    settings = load_settings(example)

    assert {c.type for c in settings.connections} == set(providers.types())


SENTINEL_URL = "sentinel://:data-pw@s1:26379;sentinel://s2:26379;sentinel://s3:26379/0"


def test_sentinel_settings_come_from_the_environment_and_secret_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "sentinel_password"
    secret.write_text("from-a-file\n", encoding="utf-8")
    monkeypatch.setenv("UNSUB_BROKER_URL", SENTINEL_URL)
    monkeypatch.setenv("UNSUB_SENTINEL_MASTER", "unsub")
    monkeypatch.setenv("UNSUB_SENTINEL_PASSWORD_FILE", str(secret))
    monkeypatch.setenv("UNSUB_PUBLISH_REPLICAS", "1")

    settings = load_settings()

    assert settings.sentinel == {"sentinel_master": "unsub", "sentinel_password": "from-a-file"}
    assert settings.state_redis_url == settings.backend_url == SENTINEL_URL
    assert settings.publish_replicas == 1
    assert "from-a-file" not in repr(settings)


def test_a_sentinel_password_file_named_in_the_config_file_is_read(tmp_path: Path) -> None:
    (tmp_path / "sp").write_text("in-a-file", encoding="utf-8")
    config = write(
        tmp_path, {"redis_url": SENTINEL_URL, "sentinel_master": "m", "sentinel_password_file": "sp"}
    )

    settings = load_settings(config)

    assert settings.sentinel == {"sentinel_master": "m", "sentinel_password": "in-a-file"}


def test_publish_replicas_defaults_to_none_and_refuses_a_negative_count() -> None:
    assert load_settings().publish_replicas == 0

    with pytest.raises(ConfigError) as caught:
        load_settings(publish_replicas=-1)

    assert caught.value.problems == ["publish_replicas: Input should be greater than or equal to 0"]
