"""What the commands print stays readable at 80 columns and in pipes: names are never cut, every
counter and delivery field shows, and nothing is lost that --json has."""

from __future__ import annotations

from rich.console import Console

from unsub_dev.localstack.demo_report import ConnectionRow, Report
from worker.cli._tables import Column, Pairs, Records, dead_letter_blocks
from worker.cli.demo import render as render_demo
from worker.cli.stats import stats_view, status_view, totals_view
from worker.pipeline.deadletters import DeadLetter
from worker.pipeline.stats import ConnectionStats, Snapshot
from worker.pipeline.status import DeliveryState, DeliveryStatus, RequestMeta, RequestStatus

NOW = 1_790_000_000.0
LONG_NAME = "whatcounts-client-b-newsletters-eu"


def printed(*renderables: object, width: int = 80) -> str:
    console = Console(width=width, record=True, force_terminal=False)
    for renderable in renderables:
        console.print(renderable)
    text = console.export_text()
    assert all(len(line) <= width for line in text.splitlines()), text
    return text


def connection(name: str, **counters: int) -> ConnectionStats:
    return ConnectionStats(
        name=name,
        type="whatcounts",
        enabled=True,
        pending=3,
        waiting_retries=2,
        next_retry_at=NOW + 40,
        oldest_pending_age_s=12.5,
        breaker="closed",
        breaker_reason=None,
        breaker_open_until=None,
        dead_letters_now=1,
        counters=counters,
    )


def snapshot(*connections: ConnectionStats) -> Snapshot:
    return Snapshot(
        taken_at=NOW,
        connections=list(connections),
        intake={"requests": 300, "accepted": 298, "invalid": 2},
        dead_letters_by_reason={"missing_customer_key": 21},
        dead_letters_total_by_reason={"missing_customer_key": 21, "invalid_email": 2},
        dead_letters_now=21,
    )


def test_stats_at_80_columns_show_every_connection_name_in_full() -> None:
    snap = snapshot(
        connection("whatcounts", delivered=94), connection("whatcounts-ck", delivered=79, dead_lettered=21)
    )

    text = printed(stats_view(snap))

    lines = text.splitlines()
    assert any(line.startswith("whatcounts ") for line in lines), text
    assert any(line.startswith("whatcounts-ck ") for line in lines), text
    assert "…" not in text


def test_stats_with_a_name_too_long_for_the_table_stack_instead_of_cutting_it() -> None:
    snap = snapshot(connection("whatcounts", delivered=94), connection(LONG_NAME, delivered=5))

    text = printed(stats_view(snap))

    assert f"{LONG_NAME}\n  delivered 5" in text
    assert "whatcounts\n  delivered 94" in text
    assert "…" not in text


def test_stats_show_the_main_counters_as_columns_and_any_other_counter_below() -> None:
    counters = {
        "delivered": 994,
        "retried": 3,
        "dead_lettered": 21,
        "rate_limited": 4764,
        "held": 12,
        "handed_back": 7,
        "breaker_opened": 2,
        "throttled_429": 0,
        "dead:missing_customer_key": 21,
    }
    snap = snapshot(connection("easytools", **counters))

    text = printed(stats_view(snap), *totals_view(snap))

    header = next(line for line in text.splitlines() if line.startswith("connection "))
    assert header.split() == [
        "connection",
        "delivered",
        "retried",
        "dead-lettered",
        "pending",
        "waiting",
        "breaker",
    ]
    row = next(line for line in text.splitlines() if line.startswith("easytools "))
    assert row.split()[:6] == ["easytools", "994", "3", "21", "3", "2"]
    for name, value in counters.items():
        if name not in {"delivered", "retried", "dead_lettered"}:
            assert f"{name} {value}" in text, name


def test_stats_stack_one_block_per_connection_when_the_table_does_not_fit() -> None:
    snap = snapshot(connection("whatcounts-ck", delivered=79, dead_lettered=21))

    text = printed(stats_view(snap), width=40)

    assert "whatcounts-ck\n" in text
    assert "delivered 79" in text
    assert "dead-lettered 21" in text


def test_a_records_table_that_fits_is_a_table_and_one_that_does_not_is_blocks() -> None:
    records = Records([Column("name"), Column("count", numeric=True)], [[LONG_NAME, "7"], ["b", "8"]])

    wide = printed(records, width=80)
    narrow = printed(records, width=36)

    assert wide.splitlines()[0].split() == ["name", "count"]
    assert f"{LONG_NAME}\n  count 7" in narrow


def test_pairs_are_never_split_across_lines() -> None:
    pairs = Pairs("heading", [(f"label{i}", f"value{i}") for i in range(20)])

    text = printed(pairs, width=40)

    for i in range(20):
        assert any(f"label{i} value{i}" in line for line in text.splitlines()), text


def status(*deliveries: DeliveryStatus, meta: bool = True) -> RequestStatus:
    request_meta = RequestMeta(
        request_id="import-5b0c",
        email_masked="j***@example.com",
        scope="global",
        source="Contact",
        requested_at="2026-09-21T10:00:00+00:00",
        accepted_at=NOW,
        connections=[d.connection for d in deliveries],
    )
    return RequestStatus(meta=request_meta if meta else None, deliveries=list(deliveries))


def delivery(name: str, state: DeliveryState, **fields: object) -> DeliveryStatus:
    return DeliveryStatus(
        connection=name, target="global", state=state, updated_at=NOW, accepted_at=NOW, **fields
    )


def test_status_at_80_columns_tells_whatcounts_from_whatcounts_ck() -> None:
    found = status(
        delivery("whatcounts", DeliveryState.DELIVERED, attempts=1, delivered_at=NOW),
        delivery(
            "whatcounts-ck", DeliveryState.DEAD_LETTERED, reason="missing_customer_key", message="no key"
        ),
    )

    text = printed(*status_view("import-5b0c", found))

    lines = text.splitlines()
    assert any(line.startswith("whatcounts ") and "delivered" in line for line in lines), text
    assert any(line.startswith("whatcounts-ck ") and "dead_lettered" in line for line in lines), text
    assert "missing_customer_key" in text
    assert "j***@example.com" in text


def test_status_shows_a_request_dead_lettered_at_intake_and_every_field_of_it() -> None:
    at_intake = DeliveryStatus(
        connection="intake",
        target="-",
        state=DeliveryState.DEAD_LETTERED,
        updated_at=NOW,
        reason="unknown_connection",
        message="connection nope is not configured",
    )

    text = printed(*status_view("r-1", status(at_intake, meta=False)))

    assert any(line.startswith("intake ") and "dead_lettered" in line for line in text.splitlines()), text
    assert "reason unknown_connection" in text
    assert "connection nope is not configured" in text


def test_a_long_provider_message_in_status_wraps_instead_of_being_cut() -> None:
    message = "HTTP 404 from Constant Contact unsubscribe: account not found " + "x" * 150 + " END"
    found = status(delivery("cc-partner", DeliveryState.RETRYING, reason="auth_failed", message=message))

    text = printed(*status_view("r-2", found))

    assert "END" in text
    assert "…" not in text


def letter(letter_id: str, connection_name: str) -> DeadLetter:
    return DeadLetter(
        id=letter_id,
        reason="missing_customer_key",
        message="realm requires a Customer Key and the request carries none " * 3,
        dead_at=NOW - 7200,
        connection=connection_name,
        email_masked="n***@example.com",
        email="nokey@example.com",
        attempts=0,
        request_id="r-9",
        target="global",
    )


def test_dead_letters_at_80_columns_keep_ids_and_connection_names_whole_and_addresses_masked() -> None:
    letters = [letter("d-0123456789abcdef", "whatcounts-ck"), letter("d-fedcba9876543210", LONG_NAME)]

    text = printed(*dead_letter_blocks(letters, now=NOW))

    assert "d-0123456789abcdef\n" in text
    assert "connection whatcounts-ck" in text
    assert f"connection {LONG_NAME}" in text
    assert "dead 2.0h ago" in text
    assert "request r-9" in text
    assert "n***@example.com" in text
    assert "nokey@example.com" not in text


def test_an_address_inside_a_dead_letters_message_is_masked() -> None:
    echoed = letter("d-0123456789abcdef", "cc-partner").model_copy(
        update={"message": "HTTP 400 from Constant Contact unsubscribe: nokey@example.com is invalid"}
    )

    text = printed(*dead_letter_blocks([echoed], now=NOW))

    assert "nokey@example.com" not in text
    assert "n***@example.com is invalid" in text


DEAD = {"missing_customer_key": 21}


def test_the_demo_table_fits_80_columns_with_its_accounts_and_reasons() -> None:
    rows = [
        ConnectionRow(
            "whatcounts-ck", "whatcounts ck-realm", 79, 0, {"missing_customer_key": 21}, 79, 79, {}, 0
        ),
        ConnectionRow("cc-partner", "cc_partner a07e1lxqqqo0", 105, 0, {}, 105, 105, {}, 0),
    ]

    text = printed(render_demo(Report(rows=rows)))

    assert text.splitlines()[1].split() == [
        "connection",
        "delivered",
        "retried",
        "dead-lettered",
        "sandbox",
        "check",
    ]
    assert any(line.startswith("whatcounts-ck ") for line in text.splitlines()), text
    assert "21 missing_customer_key" in text
    assert "ck-realm" in text
    assert "a07e1lxqqqo0" in text
