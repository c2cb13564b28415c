"""Error classification shared by every adapter: status tables, splitting, Retry-After, refusal reasons."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from email.utils import formatdate
from pathlib import Path

import httpx
import pytest

from tests.worker.adapters.conftest import make_record
from worker.adapters import cc_contacts, cc_partner, easytools, insider, whatcounts
from worker.adapters.base import EXCERPT_CHARS, AdapterDeps, Outcome, OutcomeKind
from worker.adapters.classify import StatusTable, Verdict
from worker.adapters.common import refusal_reason
from worker.adapters.http import Caller, Reply, parse_retry_after
from worker.adapters.split import (
    SPLIT_BUDGET_EXHAUSTED,
    Attempt,
    PartlyFailed,
    Rejected,
    Result,
    SplitBudget,
    deliver_isolating,
    split_calls_for,
)
from worker.records import DeliveryRecord

TABLES: dict[str, StatusTable] = {
    "cc_partner": cc_partner.STATUS_TABLE,
    "cc_contacts search": cc_contacts.SEARCH_TABLE,
    "cc_contacts contact": cc_contacts.CONTACT_TABLE,
    "whatcounts": whatcounts.STATUS_TABLE,
    "insider": insider.STATUS_TABLE,
    "easytools unsubscribe": easytools.UNSUBSCRIBE_TABLE,
    "easytools search": easytools.SEARCH_TABLE,
}


@pytest.mark.parametrize("table", TABLES.values(), ids=TABLES.keys())
def test_every_table_delivers_2xx_and_retries_timeouts_throttling_conflicts_and_5xx(
    table: StatusTable,
) -> None:
    assert all(table(status) is Verdict.DELIVERED for status in (200, 201, 202, 204))
    assert all(table(status) is Verdict.RETRY for status in (408, 409, 425, 429, 500, 502, 503, 504))


@pytest.mark.parametrize("table", TABLES.values(), ids=TABLES.keys())
def test_every_table_stops_on_an_unknown_3xx_or_4xx_rather_than_guess(table: StatusTable) -> None:
    assert table(302) is Verdict.REAUTH
    assert table(418) is Verdict.REAUTH


def test_only_the_constant_contact_tables_renew_their_token_on_401() -> None:
    renewing = {name for name, table in TABLES.items() if table(401) is Verdict.RENEW_TOKEN}

    assert renewing == {"cc_partner", "cc_contacts search", "cc_contacts contact"}


def test_400_and_422_are_refusals_of_records_wherever_records_are_sent() -> None:
    for name in ("cc_partner", "cc_contacts contact", "whatcounts", "insider", "easytools unsubscribe"):
        assert TABLES[name](400) is Verdict.REJECTED, name
        assert TABLES[name](422) is Verdict.REJECTED, name


def test_404_means_a_missing_contact_only_where_the_url_names_one() -> None:
    assert cc_contacts.CONTACT_TABLE(404) is Verdict.NOT_FOUND
    assert easytools.UNSUBSCRIBE_TABLE(404) is Verdict.NOT_FOUND
    for table in (
        cc_partner.STATUS_TABLE,
        cc_contacts.SEARCH_TABLE,
        whatcounts.STATUS_TABLE,
        insider.STATUS_TABLE,
    ):
        assert table(404) is Verdict.REAUTH


def test_rows_list_exact_statuses_then_classes() -> None:
    rows = cc_partner.STATUS_TABLE.rows()

    assert rows[0] == ("400", Verdict.REJECTED)
    assert ("other 2xx", Verdict.DELIVERED) in rows
    assert ("other 5xx", Verdict.RETRY) in rows


# -- splitting --------------------------------------------------------------------------------------


def refusing(bad: set[str], calls: list[int]) -> Attempt:
    """An attempt that refuses any call containing a bad address, naming none."""

    def attempt(records: Sequence[DeliveryRecord]) -> Result:
        calls.append(len(records))
        if any(r.email in bad for r in records):
            return Rejected(Outcome.dead("rejected_by_provider", "refused"))
        return [Outcome.delivered(status=200)] * len(records)

    return attempt


def test_splitting_isolates_every_refused_record_and_delivers_the_others() -> None:
    records = [make_record(f"u{i}@example.com") for i in range(16)]
    bad = {"u3@example.com", "u12@example.com"}
    calls: list[int] = []

    outcomes = deliver_isolating(records, refusing(bad, calls))

    dead = {r.email for r, o in zip(records, outcomes, strict=True) if o.kind is OutcomeKind.DEAD}
    assert dead == bad
    assert sum(o.kind is OutcomeKind.DELIVERED for o in outcomes) == 14
    assert len(calls) <= 2 * 2 * 4 + 1  # about 2·log2(n) calls per bad record, not n


def test_two_refused_records_in_a_full_batch_of_500_are_isolated_within_the_split_budget() -> None:
    records = [make_record(f"u{i}@example.com") for i in range(500)]
    bad = {"u0@example.com", "u499@example.com"}
    calls: list[int] = []

    outcomes = deliver_isolating(records, refusing(bad, calls))

    dead = {r.email for r, o in zip(records, outcomes, strict=True) if o.kind is OutcomeKind.DEAD}
    assert dead == bad
    assert sum(o.kind is OutcomeKind.DELIVERED for o in outcomes) == 498
    assert len(calls) <= 1 + split_calls_for(500) == 37


def test_a_batch_refused_everywhere_stops_splitting_when_the_call_budget_is_spent() -> None:
    records = [make_record(f"u{i}@example.com") for i in range(64)]
    calls: list[int] = []

    outcomes = deliver_isolating(records, refusing({r.email for r in records}, calls))

    assert len(calls) == 1 + split_calls_for(64) == 25  # not 2·64-1 = 127
    kinds = {o.kind for o in outcomes}
    assert kinds == {OutcomeKind.DEAD, OutcomeKind.RETRY}
    retried = [o for o in outcomes if o.kind is OutcomeKind.RETRY]
    assert {o.reason for o in retried} == {SPLIT_BUDGET_EXHAUSTED}
    assert len(retried) + sum(o.kind is OutcomeKind.DEAD for o in outcomes) == 64


def test_splitting_stops_at_the_deadline_and_retries_only_what_is_unresolved() -> None:
    records = [make_record(f"u{i}@example.com") for i in range(8)]
    bad = {"u4@example.com"}
    calls: list[int] = []
    now = [0.0]
    slow = refusing(bad, calls)

    def attempt(batch: Sequence[DeliveryRecord]) -> Result:
        now[0] += 4.0  # every call takes 4 s
        return slow(batch)

    budget = SplitBudget.for_batch(len(records), deadline_s=10.0, clock=lambda: now[0])
    outcomes = deliver_isolating(records, attempt, budget)

    # calls at t=0 (8), 4 (u0-u3, accepted), 8 (u4-u7, refused); at t=12 the deadline has passed.
    assert calls == [8, 4, 4]
    assert [o.kind for o in outcomes[:4]] == [OutcomeKind.DELIVERED] * 4
    assert [o.reason for o in outcomes[4:]] == [SPLIT_BUDGET_EXHAUSTED] * 4


def test_the_first_call_of_a_batch_is_made_whatever_the_budget() -> None:
    calls: list[int] = []
    budget = SplitBudget(max_calls=0, deadline=0.0, clock=lambda: 1.0)

    outcomes = deliver_isolating([make_record(), make_record()], refusing(set(), calls), budget)

    assert calls == [2]
    assert [o.kind for o in outcomes] == [OutcomeKind.DELIVERED] * 2


def test_a_count_of_failures_equal_to_the_batch_needs_no_split() -> None:
    calls: list[int] = []

    def attempt(records: Sequence[DeliveryRecord]) -> Result:
        calls.append(len(records))
        return PartlyFailed(len(records), Outcome.dead("rejected_by_provider", "x"), Outcome.delivered())

    outcomes = deliver_isolating([make_record(), make_record()], attempt)

    assert [o.kind for o in outcomes] == [OutcomeKind.DEAD] * 2
    assert calls == [2]


def test_a_count_of_zero_failures_delivers_the_whole_batch() -> None:
    def attempt(records: Sequence[DeliveryRecord]) -> Result:
        return PartlyFailed(0, Outcome.dead("rejected_by_provider", "x"), Outcome.delivered(status=200))

    outcomes = deliver_isolating([make_record(), make_record(), make_record()], attempt)

    assert [o.kind for o in outcomes] == [OutcomeKind.DELIVERED] * 3


def test_an_empty_batch_makes_no_call() -> None:
    calls: list[int] = []

    assert deliver_isolating([], refusing(set(), calls)) == []
    assert calls == []


# -- helpers ----------------------------------------------------------------------------------------


def test_retry_after_is_read_as_seconds_or_as_an_http_date() -> None:
    now = time.time()

    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(formatdate(now + 60, usegmt=True), now) == pytest.approx(60, abs=1)
    assert parse_retry_after(formatdate(now - 60, usegmt=True), now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("1.5", 1.5), ("0.25", 0.25), (" 7 ", 7.0), ("0", 0.0), ("-1", None), ("1e3", None), ("nan", None)],
)
def test_retry_after_delta_seconds_may_carry_a_fraction(value: str, seconds: float | None) -> None:
    assert parse_retry_after(value) == seconds


def test_retry_after_is_read_in_every_http_date_form_including_the_zoneless_asctime() -> None:
    now = 784111777.0  # Sun, 06 Nov 1994 08:49:37 GMT, RFC 9110's example date

    for text in (
        "Sun, 06 Nov 1994 08:50:07 GMT",  # IMF-fixdate
        "Sunday, 06-Nov-94 08:50:07 GMT",  # obsolete RFC 850
        "Sun Nov  6 08:50:07 1994",  # obsolete asctime: no zone, GMT by definition
    ):
        assert parse_retry_after(text, now) == pytest.approx(30.0), text


def test_a_decimal_retry_after_becomes_the_earliest_retry_time_of_the_outcome() -> None:
    reply = Reply(503, "busy", httpx.Headers({"Retry-After": "1.5"}))
    caller = Caller(httpx.Client(), AdapterDeps(redis=None), provider="p", scrub=str)  # type: ignore[arg-type]

    before = time.time()
    outcome = caller.retry(reply, "unsubscribe")

    assert outcome.kind is OutcomeKind.RETRY
    assert outcome.not_before is not None
    assert before + 1.5 <= outcome.not_before <= time.time() + 1.5


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("jane@ does not appear to be a valid email address", "invalid_email"),
        ('{"error_message": "Email address is invalid"}', "invalid_email"),
        ("Please enter a valid uploader email", "rejected_by_provider"),
        ("Bad request", "rejected_by_provider"),
    ],
)
def test_a_refusal_that_calls_the_address_invalid_is_invalid_email(text: str, reason: str) -> None:
    assert refusal_reason(text) == reason


def test_excerpts_are_redacted_and_cut() -> None:
    outcome = Outcome.dead("x", "y", excerpt="password=hunter22 " + "z" * 2000)

    assert outcome.excerpt is not None
    assert "hunter22" not in outcome.excerpt
    assert len(outcome.excerpt) == EXCERPT_CHARS


# -- the documentation ------------------------------------------------------------------------------

DOC = Path(__file__).resolve().parents[3] / "docs" / "providers.md"
DOCUMENTED: dict[str, list[StatusTable]] = {
    "cc_partner": [cc_partner.STATUS_TABLE],
    "cc_contacts": [cc_contacts.SEARCH_TABLE, cc_contacts.CONTACT_TABLE],
    "whatcounts": [whatcounts.STATUS_TABLE],
    "insider": [insider.STATUS_TABLE],
    "easytools": [easytools.UNSUBSCRIBE_TABLE, easytools.SEARCH_TABLE],
}


def doc_section(provider: str) -> str:
    text = DOC.read_text(encoding="utf-8")
    start = text.index(f"\n## {provider}:")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


@pytest.mark.parametrize("provider", DOCUMENTED)
def test_the_providers_page_lists_every_status_each_table_names(provider: str) -> None:
    section = doc_section(provider)
    table_rows = {line for line in section.splitlines() if line.startswith("| ")}

    for table in DOCUMENTED[provider]:
        for status in table.exact:
            assert any(re.search(rf"(^\| |, ){status}\b", row) for row in table_rows), (provider, status)
