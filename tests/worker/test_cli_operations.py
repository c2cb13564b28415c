"""`unsub stats`, `unsub status` and `unsub dlq ...` against real Redis state."""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from tests.support.cli_config import write_cli_config
from tests.support.intake import take_in
from tests.support.pipeline_harness import WHATCOUNTS, PipelineHarness
from worker import keys
from worker.adapters.base import Outcome
from worker.cli import app
from worker.pipeline import buffer, deadletters
from worker.pipeline.delivery import drain
from worker.records import DeliveryRecord

runner = CliRunner()


@pytest.fixture(autouse=True)
def logging_restored() -> Iterator[None]:
    """`unsub dlq` logs to the CliRunner's stderr, which is closed once the command returns."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers, root.level = handlers, level


@pytest.fixture
def config(tmp_path: Path, redis_url: str) -> Path:
    return write_cli_config(tmp_path, redis_url)


def unsub(config: Path, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, [*args, "--config", str(config)])
    return result.exit_code, result.output


@pytest.fixture
def with_dead_letters(harness: PipelineHarness) -> PipelineHarness:
    """Two delivered, one missing customer key, one rejected, one invalid message."""
    harness.adapter("wc").script = lambda batch: [
        Outcome.dead("rejected_by_provider", "FAILURE: 1 record(s) processed", status=200)
        if r.email.startswith("bad")
        else Outcome.delivered()
        for r in batch
    ]
    payload = [
        {"email": e, "request_id": f"r-{e.split('@')[0]}", "connections": ["wc"]}
        for e in ("ok1@example.com", "ok2@example.com", "nokey@example.com", "bad@example.com")
    ] + [{"email": "broken"}]
    take_in(harness.rt, payload, origin="t")
    drain(harness.rt, "wc")
    return harness


def test_stats_show_each_connection_and_the_dead_letters(
    config: Path, with_dead_letters: PipelineHarness
) -> None:
    code, out = unsub(config, "stats", "--json")

    assert code == 0
    snapshot = json.loads(out)
    wc = next(c for c in snapshot["connections"] if c["name"] == "wc")
    assert wc["counters"]["delivered"] == 2
    assert wc["counters"]["dead_lettered"] == 2
    assert snapshot["dead_letters_by_reason"] == {
        "invalid_email": 1, "missing_customer_key": 1, "rejected_by_provider": 1,
    }  # fmt: skip
    code, table = unsub(config, "stats")
    assert code == 0
    assert "wc" in table
    assert "dead letters now: 3" in table


def test_status_shows_every_delivery_of_a_request(config: Path, with_dead_letters: PipelineHarness) -> None:
    code, out = unsub(config, "status", "r-ok1", "--json")

    assert code == 0
    [delivery] = json.loads(out)["r-ok1"]["deliveries"]
    assert (delivery["connection"], delivery["state"]) == ("wc", "delivered")
    code, out = unsub(config, "status", "--email", "BAD@example.com")
    assert code == 0
    assert "dead_lettered" in out
    assert "rejected_by_provider" in out


def test_status_of_an_unknown_request_exits_1(config: Path, redis_client: object) -> None:
    code, out = unsub(config, "status", "never-seen")

    assert code == 1
    assert "no such request" in out


def test_dlq_list_masks_addresses_and_filters(config: Path, with_dead_letters: PipelineHarness) -> None:
    code, out = unsub(config, "dlq", "list")

    assert code == 0
    assert "3 of 3 dead letter(s)" in out
    assert "nokey@example.com" not in out
    assert "n***@example.com" in out
    code, out = unsub(config, "dlq", "list", "--reason", "missing_customer_key", "--json")
    [line] = out.strip().splitlines()
    assert json.loads(line)["reason"] == "missing_customer_key"
    assert "nokey@example.com" not in line


def test_dlq_show_reveals_the_address_only_on_request(
    config: Path, with_dead_letters: PipelineHarness
) -> None:
    [letter] = deadletters.scan(with_dead_letters.redis, deadletters.Filter(reason="rejected_by_provider"))

    code, hidden = unsub(config, "dlq", "show", letter.id)
    _, shown = unsub(config, "dlq", "show", letter.id, "--reveal")

    assert code == 0
    assert "bad@example.com" not in hidden
    assert "bad@example.com" in shown
    assert unsub(config, "dlq", "show", "no-such-id")[0] == 1


def test_replay_with_the_missing_customer_key_puts_the_record_back(
    config: Path, with_dead_letters: PipelineHarness
) -> None:
    [letter] = deadletters.scan(with_dead_letters.redis, deadletters.Filter(reason="missing_customer_key"))

    code, out = unsub(config, "dlq", "replay", letter.id, "--customer-key", "11293")

    assert code == 0, out
    assert "replayed 1 dead letter(s)" in out
    assert deadletters.get(with_dead_letters.redis, letter.id) is None
    [(_, fields)] = with_dead_letters.redis.xrange(keys.buffer_stream("wc"))
    record = DeliveryRecord.model_validate_json(fields[buffer.RECORD_FIELD])
    assert (record.email, record.customer_key, record.attempts) == ("nokey@example.com", "11293", 0)


def test_replay_all_by_reason_reports_what_could_not_be_replayed(
    config: Path, with_dead_letters: PipelineHarness
) -> None:
    code, out = unsub(config, "dlq", "replay", "--all", "--reason", "invalid_email")

    assert code == 1
    assert "replayed 0" in out
    assert "the message itself was invalid" in out

    code, out = unsub(config, "dlq", "replay", "--all", "--connection", "wc")
    assert code == 0
    assert "replayed 2 dead letter(s)" in out
    assert with_dead_letters.redis.xlen(keys.buffer_stream("wc")) == 2


def test_replay_needs_ids_or_all(config: Path, with_dead_letters: PipelineHarness) -> None:
    assert unsub(config, "dlq", "replay")[0] == 2


def test_purge_asks_for_yes_then_deletes(config: Path, with_dead_letters: PipelineHarness) -> None:
    code, out = unsub(config, "dlq", "purge", "--all", "--reason", "invalid_email")
    assert code == 2
    assert "add --yes" in out

    code, out = unsub(config, "dlq", "purge", "--all", "--reason", "invalid_email", "--yes")
    assert code == 0
    assert "purged 1" in out
    assert deadletters.count(with_dead_letters.redis) == 2


def test_export_writes_csv_and_jsonl_masked_unless_revealed(
    config: Path, with_dead_letters: PipelineHarness, tmp_path: Path
) -> None:
    out_file = tmp_path / "dead.csv"
    code, _ = unsub(
        config, "dlq", "export", "--format", "csv", "--output", str(out_file), "--connection", "wc"
    )
    rows = list(csv.DictReader(io.StringIO(out_file.read_text(encoding="utf-8"))))

    assert code == 0
    assert sorted(r["reason"] for r in rows) == ["missing_customer_key", "rejected_by_provider"]
    assert all("***@" in r["email"] for r in rows)
    revealed = runner.invoke(
        app, ["dlq", "export", "--reveal", "--connection", "wc", "--config", str(config)]
    )
    emails = sorted(json.loads(line)["email"] for line in revealed.stdout.splitlines())
    assert emails == ["bad@example.com", "nokey@example.com"]


def test_an_unreachable_redis_exits_3(tmp_path: Path) -> None:
    path = tmp_path / "u.yaml"
    path.write_text(yaml.safe_dump({"broker_url": "redis://127.0.0.1:1/0"}), encoding="utf-8")

    code, out = unsub(path, "stats")

    assert code == 3
    assert "cannot reach Redis" in out


ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
def with_an_address_in_raw(with_dead_letters: PipelineHarness) -> PipelineHarness:
    """Adds an invalid message whose raw text holds an address."""
    bad = {"email": "raw.person@example.com", "scope": "bogus", "connections": ["wc"]}
    take_in(with_dead_letters.rt, [bad], origin="t2")
    return with_dead_letters


def test_no_dlq_command_shows_a_clear_address_without_reveal(
    config: Path, with_an_address_in_raw: PipelineHarness
) -> None:
    letters = list(deadletters.scan(with_an_address_in_raw.redis, deadletters.Filter()))
    clear = {letter.email for letter in letters if letter.email} | {"raw.person@example.com"}

    outputs = [
        unsub(config, "dlq", "list")[1],
        unsub(config, "dlq", "list", "--json")[1],
        unsub(config, "dlq", "export")[1],
        unsub(config, "dlq", "export", "--format", "csv")[1],
        *(unsub(config, "dlq", "show", letter.id)[1] for letter in letters),
    ]

    assert len(letters) == 4
    assert clear == {"nokey@example.com", "bad@example.com", "raw.person@example.com"}
    assert [a for a in clear if any(a in out for out in outputs)] == []
    assert "r***@example.com" in unsub(config, "dlq", "show", _raw_letter(letters).id)[1]


def _raw_letter(letters: list[deadletters.DeadLetter]) -> deadletters.DeadLetter:
    return next(letter for letter in letters if letter.raw and "raw.person" in letter.raw)


def test_every_reveal_is_logged_with_who_which_command_and_which_letters(
    config: Path, with_dead_letters: PipelineHarness
) -> None:
    [letter] = deadletters.scan(with_dead_letters.redis, deadletters.Filter(reason="rejected_by_provider"))

    shown = runner.invoke(app, ["dlq", "show", letter.id, "--reveal", "--config", str(config)])
    exported = runner.invoke(app, ["dlq", "export", "--reveal", "--config", str(config)])

    assert "bad@example.com" in shown.stdout
    [show_log] = [json.loads(line) for line in shown.stderr.splitlines() if "revealed" in line]
    assert (show_log["level"], show_log["command"], show_log["letter_ids"]) == (
        "warning", "unsub dlq show --reveal", [letter.id],
    )  # fmt: skip
    assert show_log["emails"] == ["b***@example.com"]
    assert "uid" in show_log["operator"]
    [export_log] = [json.loads(line) for line in exported.stderr.splitlines() if "revealed" in line]
    assert sorted(export_log["letter_ids"]) == sorted(
        d.id for d in deadletters.scan(with_dead_letters.redis, deadletters.Filter())
    )
    assert "@example.com" not in exported.stderr.replace("***@example.com", "")


def test_replay_dry_run_says_what_would_be_replayed_and_changes_nothing(
    config: Path, with_dead_letters: PipelineHarness
) -> None:
    before = sorted(d.id for d in deadletters.scan(with_dead_letters.redis, deadletters.Filter()))

    code, out = unsub(config, "dlq", "replay", "--all", "--dry-run")

    assert code == 1  # the invalid message could not be replayed, dry run or not
    assert "dry run: would replay 2 dead letter(s) as 2 delivery(ies); nothing changed" in out
    assert "would not replay" in out
    assert "wc global" in out
    assert sorted(d.id for d in deadletters.scan(with_dead_letters.redis, deadletters.Filter())) == before
    assert with_dead_letters.redis.xlen(keys.buffer_stream("wc")) == 0
    assert "replayed" not in with_dead_letters.redis.hgetall(keys.stats("wc"))


def test_exports_and_json_listings_give_iso_8601_utc_times(
    config: Path, with_dead_letters: PipelineHarness, tmp_path: Path
) -> None:
    out_file = tmp_path / "dead.csv"

    unsub(config, "dlq", "export", "--format", "csv", "--output", str(out_file))
    _, listed = unsub(config, "dlq", "list", "--json")

    rows = list(csv.DictReader(io.StringIO(out_file.read_text(encoding="utf-8"))))
    assert rows
    assert all(ISO_UTC.match(row["dead_at"]) for row in rows)
    attempted = [row for row in rows if row["last_attempt_at"]]
    assert attempted
    assert all(ISO_UTC.match(row["last_attempt_at"]) for row in attempted)
    assert all(ISO_UTC.match(json.loads(line)["dead_at"]) for line in listed.splitlines())


def test_a_reveal_is_logged_even_when_the_log_level_hides_warnings(
    tmp_path: Path, redis_url: str, with_dead_letters: PipelineHarness
) -> None:
    quiet = tmp_path / "quiet.yaml"
    quiet.write_text(
        yaml.safe_dump({"broker_url": redis_url, "log_level": "ERROR", "connections": [WHATCOUNTS]}),
        encoding="utf-8",
    )
    [letter] = deadletters.scan(with_dead_letters.redis, deadletters.Filter(reason="rejected_by_provider"))

    shown = runner.invoke(app, ["dlq", "show", letter.id, "--reveal", "--config", str(quiet)])

    assert shown.exit_code == 0
    assert "dead-letter addresses revealed" in shown.stderr


def test_status_without_an_argument_says_what_to_give() -> None:
    result = runner.invoke(app, ["status"])

    assert result.exit_code == 2
    assert "unsub status REQUEST_ID, or unsub status --email ADDRESS" in result.output
    assert "not both" not in result.output


def test_status_json_gives_every_time_as_iso_8601_utc(
    config: Path, with_dead_letters: PipelineHarness
) -> None:
    code, out = unsub(config, "status", "r-ok1", "--json")

    assert code == 0
    shown = json.loads(out)["r-ok1"]
    [delivery] = shown["deliveries"]
    times = [shown["meta"]["accepted_at"], delivery["updated_at"], delivery["delivered_at"]]
    assert all(isinstance(t, str) and t.endswith("Z") and "T" in t for t in times), times


def test_stats_json_gives_every_time_as_iso_8601_utc(
    config: Path, with_dead_letters: PipelineHarness
) -> None:
    code, out = unsub(config, "stats", "--json")

    assert code == 0
    shown = json.loads(out)
    assert shown["taken_at"].endswith("Z")
    assert shown["warnings"] == []


def test_stats_without_connections_say_how_to_give_the_configuration(
    tmp_path: Path, redis_url: str, redis_client: object
) -> None:
    bare = tmp_path / "bare.yaml"
    bare.write_text(yaml.safe_dump({"broker_url": redis_url}), encoding="utf-8")

    code, out = unsub(bare, "stats")
    _, json_out = unsub(bare, "stats", "--json")

    assert code == 0
    assert "no connections configured" in out
    assert "--config FILE or UNSUB_CONFIG=FILE" in " ".join(out.split())
    assert "connection " not in out  # no empty table
    assert json.loads(json_out)["warnings"][0].startswith("no connections configured")


@pytest.mark.parametrize("command", ["sandbox", "demo"])
def test_a_development_tool_missing_from_the_install_says_how_to_install_it_and_exits_2(
    command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from worker.cli import _common

    real = _common.importlib.util.find_spec
    monkeypatch.setattr(
        _common.importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a)
    )

    with pytest.raises(typer.Exit) as caught:
        _common.require_dev_tools(command)

    assert caught.value.exit_code == 2
    assert "pip install 'unsub-relay[dev]'" in capsys.readouterr().err
