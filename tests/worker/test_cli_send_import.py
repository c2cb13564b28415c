"""`unsub send` and `unsub import` against the real Redis broker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis
import yaml
from typer.testing import CliRunner

from producer import names
from tests.support.intake_queue import queued_requests, queued_tasks
from tests.support.pipeline_harness import INSIDER, WHATCOUNTS
from worker.cli import app

runner = CliRunner()


@pytest.fixture
def config(tmp_path: Path, redis_url: str, redis_client: redis.Redis) -> Path:
    path = tmp_path / "unsub.yaml"
    path.write_text(
        yaml.safe_dump({"broker_url": redis_url, "connections": [WHATCOUNTS, INSIDER]}), encoding="utf-8"
    )
    return path


def unsub(config: Path, *args: str, stdin: bytes | None = None) -> tuple[int, str]:
    result = runner.invoke(app, [*args, "--config", str(config)], input=stdin)
    return result.exit_code, result.output


def rejects_of(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_send_publishes_one_request_and_prints_its_id(config: Path, redis_client: redis.Redis) -> None:
    code, out = unsub(config, "send", "Jane@Example.com", "--list", "7", "--connection", "wc",
                      "--reason", "complaint", "--source", "System", "--request-id", "ops-1")  # fmt: skip

    assert (code, out.strip()) == (0, "ops-1")
    [request] = queued_requests(redis_client)
    assert request["email"] == "jane@example.com"
    assert request["scope"] == "list"
    assert request["targets"] == {"wc": {"list_ids": ["7"], "all_accounts": False}}
    assert (request["reason"], request["source"]) == ("complaint", "System")


def test_send_with_a_group_and_no_connection_targets_every_configured_connection(
    config: Path, redis_client: redis.Redis
) -> None:
    code, _ = unsub(config, "send", "a@example.com", "--group", "newsletter")

    assert code == 0
    [request] = queued_requests(redis_client)
    assert "connections" not in request
    assert {name: t["group"] for name, t in request["targets"].items()} == {
        "wc": "newsletter",
        "ins": "newsletter",
    }


def test_send_with_an_invalid_address_exits_2_and_sends_nothing(
    config: Path, redis_client: redis.Redis
) -> None:
    code, out = unsub(config, "send", "not-an-address")

    assert code == 2
    assert "email:" in out
    assert redis_client.llen(names.INTAKE_QUEUE) == 0


def test_send_exits_3_when_the_broker_is_unreachable(tmp_path: Path) -> None:
    config = tmp_path / "down.yaml"
    config.write_text("broker_url: redis://127.0.0.1:1/0\n", encoding="utf-8")

    code, out = unsub(config, "send", "a@example.com")

    assert code == 3
    assert "127.0.0.1:1" in out


def test_importing_100000_csv_rows_publishes_every_row_in_chunks(
    config: Path, tmp_path: Path, redis_client: redis.Redis
) -> None:
    rows = 100_000
    source = tmp_path / "suppressions.csv"
    with source.open("w", encoding="utf-8") as out:
        out.write("email,connections,reason\n")
        out.writelines(f"user{i}@example.com,wc;ins,import\n" for i in range(rows))

    code, out = unsub(config, "import", str(source))

    assert code == 0, out
    assert f"{rows} published, 0 rejected" in out
    assert redis_client.llen(names.INTAKE_QUEUE) == rows // 500
    requests = queued_requests(redis_client)
    assert len(requests) == rows
    assert len({r["request_id"] for r in requests}) == rows
    assert requests[-1]["email"] == f"user{rows - 1}@example.com"
    assert requests[0]["connections"] == ["wc", "ins"]


def test_a_malformed_csv_reports_each_bad_row_with_its_line_number_and_exits_1(
    config: Path, tmp_path: Path, redis_client: redis.Redis
) -> None:
    source = tmp_path / "bad.csv"
    source.write_bytes(
        b"email,scope,source\n"
        b"good@example.com,,\n"  # line 2
        b"not-an-email,,\n"  # line 3
        b"x@example.com,global,Contact,surplus\n"  # line 4
        b"caf\xe9@example.com,,\n"  # line 5: Latin-1, not UTF-8
        b"y@example.com,everywhere,\n"  # line 6
        b'"multi\nline@example.com",,\n'  # lines 7-8
        b"z@example.com,,Robot\n"  # line 9
    )

    code, out = unsub(config, "import", str(source))

    assert code == 1
    assert "1 published, 6 rejected" in out
    rejects = rejects_of(tmp_path / "bad.csv.rejects.jsonl")
    assert [r["line"] for r in rejects] == [3, 4, 5, 6, 7, 9]
    problems = [" ".join(r["problems"]) for r in rejects]  # type: ignore[arg-type]
    assert problems[0].startswith("email:")
    assert problems[1] == "expected 3 columns, found 4"
    assert problems[2] == "column 1: not valid UTF-8"
    assert problems[3].startswith("scope:")
    assert problems[4].startswith("email:")
    assert problems[5].startswith("source:")
    assert "line 3: email:" in out
    assert [r["email"] for r in queued_requests(redis_client)] == ["good@example.com"]


def test_bad_jsonl_lines_are_rejected_with_their_line_numbers(
    config: Path, tmp_path: Path, redis_client: redis.Redis
) -> None:
    source = tmp_path / "events.jsonl"
    source.write_bytes(
        b'{"email": "a@example.com", "targets": {"ins": {"group": "news"}}, "scope": "list"}\n'
        b"{not json\n"
        b"\n"
        b'["a list"]\n'
        b'{"email": "b@example.com", "emial": "typo"}\n'
        b'{"email": "\xff@example.com"}\n'
        b'{"email": "c@example.com", "list_id": "5", "connections": ["wc"]}\n'
    )

    code, _ = unsub(config, "import", str(source), "--rejects", str(tmp_path / "r.jsonl"))

    assert code == 1
    assert [(r["line"], r["problems"][0][:18]) for r in rejects_of(tmp_path / "r.jsonl")] == [  # type: ignore[index]
        (2, "not valid JSON: Ex"),
        (4, "expected a JSON ob"),
        (5, "emial: Extra input"),
        (6, "not valid UTF-8"),
    ]
    requests = queued_requests(redis_client)
    assert [r["email"] for r in requests] == ["a@example.com", "c@example.com"]
    assert requests[1]["targets"]["wc"]["list_ids"] == ["5"]


def test_an_unknown_column_stops_the_import_before_anything_is_sent(
    config: Path, tmp_path: Path, redis_client: redis.Redis
) -> None:
    source = tmp_path / "typo.csv"
    source.write_text("emial,scope\na@example.com,global\n", encoding="utf-8")

    code, out = unsub(config, "import", str(source))

    assert code == 2
    assert "unknown column(s) 'emial'" in out
    assert redis_client.llen(names.INTAKE_QUEUE) == 0


def test_a_dry_run_validates_every_row_and_sends_nothing(
    config: Path, tmp_path: Path, redis_client: redis.Redis
) -> None:
    source = tmp_path / "list.csv"
    source.write_text("email\na@example.com\nb@example.com\nbroken\n", encoding="utf-8")

    code, out = unsub(config, "import", str(source), "--dry-run")

    assert code == 1
    assert "2 valid (dry run, nothing sent), 1 rejected" in out
    assert redis_client.llen(names.INTAKE_QUEUE) == 0


def test_import_reads_standard_input_and_applies_the_default_options(
    config: Path, tmp_path: Path, redis_client: redis.Redis
) -> None:
    rejects = tmp_path / "stdin.rejects.jsonl"
    csv = b"email,reason\na@example.com,\nb@example.com,moved\n"

    code, out = unsub(config, "import", "-", "--rejects", str(rejects), "--connection", "wc",
                      "--reason", "bulk", "--source", "Account", "--scope", "global", stdin=csv)  # fmt: skip

    assert code == 0, out
    requests = queued_requests(redis_client)
    assert [(r["email"], r["reason"]) for r in requests] == [
        ("a@example.com", "bulk"),
        ("b@example.com", "moved"),
    ]
    assert {(tuple(r["connections"]), r["source"], r["scope"]) for r in requests} == {
        (("wc",), "Account", "global")
    }
    assert not rejects.exists()


def test_importing_the_same_file_twice_gives_the_same_request_ids(
    config: Path, tmp_path: Path, redis_client: redis.Redis
) -> None:
    source = tmp_path / "again.csv"
    source.write_text("email\na@example.com\nb@example.com\n", encoding="utf-8")

    unsub(config, "import", str(source))
    unsub(config, "import", str(source))

    first, second = (t.requests for t in queued_tasks(redis_client))
    assert [r["request_id"] for r in first] == [r["request_id"] for r in second]
    assert first[0]["request_id"] != first[1]["request_id"]


def test_import_exits_3_when_the_broker_is_unreachable(tmp_path: Path) -> None:
    config = tmp_path / "down.yaml"
    config.write_text("broker_url: redis://127.0.0.1:1/0\n", encoding="utf-8")
    source = tmp_path / "list.csv"
    source.write_text("email\na@example.com\n", encoding="utf-8")

    code, _ = unsub(config, "import", str(source))

    assert code == 3


# -- no widening, and only configured connections -------------------------------------------------


def test_send_with_scope_global_and_a_list_exits_2_and_sends_nothing(
    config: Path, redis_client: redis.Redis
) -> None:
    code, out = unsub(
        config, "send", "a@example.com", "--scope", "global", "--list", "5", "--connection", "wc"
    )

    assert code == 2
    assert "targets.wc.list_ids:" in out
    assert "set scope to list" in out
    assert redis_client.llen(names.INTAKE_QUEUE) == 0


def test_send_to_a_connection_the_configuration_does_not_have_exits_2_naming_it(
    config: Path, redis_client: redis.Redis
) -> None:
    code, out = unsub(config, "send", "a@example.com", "--connection", "nope", "--connection", "wc")

    assert code == 2
    assert "connections: not in the configuration: nope" in out
    assert redis_client.llen(names.INTAKE_QUEUE) == 0


def test_send_without_configured_connections_does_not_check_names(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis
) -> None:
    bare = tmp_path / "bare.yaml"
    bare.write_text(yaml.safe_dump({"broker_url": redis_url}), encoding="utf-8")

    code, out = unsub(bare, "send", "a@example.com", "--connection", "elsewhere", "--request-id", "r-1")

    assert (code, out.strip()) == (0, "r-1")
    [request] = queued_requests(redis_client)
    assert request["connections"] == ["elsewhere"]


@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]], ids=["publish", "dry run"])
def test_import_with_an_unknown_connection_option_exits_2_before_reading(
    config: Path, tmp_path: Path, redis_client: redis.Redis, dry_run: list[str]
) -> None:
    source = tmp_path / "list.csv"
    source.write_text("email\na@example.com\n", encoding="utf-8")

    code, out = unsub(config, "import", str(source), "--connection", "nope", *dry_run)

    assert code == 2
    assert "--connection nope: not in the configuration (it has ins, wc)" in out
    assert redis_client.llen(names.INTAKE_QUEUE) == 0
    assert not (tmp_path / "list.csv.rejects.jsonl").exists()


@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]], ids=["publish", "dry run"])
def test_import_rejects_rows_naming_connections_the_configuration_does_not_have(
    config: Path, tmp_path: Path, redis_client: redis.Redis, dry_run: list[str]
) -> None:
    source = tmp_path / "events.jsonl"
    source.write_text(
        '{"email": "a@example.com", "connections": ["wc"]}\n'
        '{"email": "b@example.com", "connections": ["wc", "typo"]}\n'
        '{"email": "c@example.com", "scope": "list", "targets": {"gone": {"group": "news"}}}\n',
        encoding="utf-8",
    )

    code, _ = unsub(config, "import", str(source), *dry_run)

    assert code == 1
    rejects = rejects_of(tmp_path / "events.jsonl.rejects.jsonl")
    assert [(r["line"], r["problems"]) for r in rejects] == [
        (2, ["connections: not in the configuration: typo"]),
        (3, ["connections: not in the configuration: gone"]),
    ]
    assert [r["email"] for r in queued_requests(redis_client)] == ([] if dry_run else ["a@example.com"])


def test_a_row_with_lists_and_no_scope_is_imported_list_scoped_and_one_saying_global_is_rejected(
    config: Path, tmp_path: Path, redis_client: redis.Redis
) -> None:
    source = tmp_path / "scoped.csv"
    source.write_text(
        "email,scope,connections,list_ids,group\n"
        "a@example.com,,wc,5,\n"  # line 2: list ids, no scope
        "b@example.com,global,wc,5,\n"  # line 3: global and a list
        "c@example.com,,ins,,news\n"  # line 4: a group, no scope
        "d@example.com,global,ins,,news\n",  # line 5: global and a group
        encoding="utf-8",
    )

    code, _ = unsub(config, "import", str(source))

    assert code == 1
    rejects = rejects_of(tmp_path / "scoped.csv.rejects.jsonl")
    assert [r["line"] for r in rejects] == [3, 5]
    assert all("set scope to list" in r["problems"][0] for r in rejects)  # type: ignore[index]
    requests = queued_requests(redis_client)
    assert [(r["email"], r["scope"], r["targets"]) for r in requests] == [
        ("a@example.com", "list", {"wc": {"list_ids": ["5"], "all_accounts": False}}),
        ("c@example.com", "list", {"ins": {"group": "news", "list_ids": [], "all_accounts": False}}),
    ]


def test_the_scope_option_global_does_not_silently_narrow_rows_that_name_lists(
    config: Path, tmp_path: Path, redis_client: redis.Redis
) -> None:
    source = tmp_path / "mixed.csv"
    source.write_text("email,list_ids\na@example.com,\nb@example.com,5\n", encoding="utf-8")

    code, _ = unsub(config, "import", str(source), "--scope", "global", "--connection", "wc")

    assert code == 1
    [reject] = rejects_of(tmp_path / "mixed.csv.rejects.jsonl")
    assert reject["line"] == 3
    assert [(r["email"], r["scope"]) for r in queued_requests(redis_client)] == [("a@example.com", "global")]


def test_csv_cells_are_trimmed_but_a_jsonl_key_given_twice_is_rejected(
    config: Path, tmp_path: Path, redis_client: redis.Redis
) -> None:
    csv_file = tmp_path / "spaced.csv"
    csv_file.write_text("email,connections\n  a@example.com , wc \n", encoding="utf-8")
    jsonl_file = tmp_path / "twice.jsonl"
    jsonl_file.write_text('{"email": "b@example.com", "email": "c@example.com"}\n', encoding="utf-8")

    csv_code, _ = unsub(config, "import", str(csv_file))
    jsonl_code, _ = unsub(config, "import", str(jsonl_file))

    assert (csv_code, jsonl_code) == (0, 1)
    assert [(r["email"], r["connections"]) for r in queued_requests(redis_client)] == [
        ("a@example.com", ["wc"])
    ]
    [reject] = rejects_of(tmp_path / "twice.jsonl.rejects.jsonl")
    assert reject["problems"] == ["an object has the same key twice"]
