"""`unsub stats` and `unsub status`: what the system has done, and what happened to one request.

Both print the same facts as their ``--json`` form, readable at any width (``worker.cli._tables``).
Counters are rendered generically: delivered / retried / dead-lettered / pending are the main
columns, every other counter (whatever the pipeline counts) is listed under its connection.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Final

import typer
from rich.text import Text

from producer.contract import normalize_email
from worker.cli import purge as purge_cmd
from worker.cli._common import (
    ConfigOption,
    Exit,
    console,
    fail,
    format_age,
    format_time,
    iso_times,
    runtime_or_exit,
)
from worker.cli._tables import Cell, Column, Pairs, Records
from worker.pipeline import stats as stats_mod
from worker.pipeline import status as status_mod
from worker.settings import CONFIG_ENV_VAR

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
PurgeOption = Annotated[
    str | None,
    typer.Option(
        "--purge-connection",
        metavar="NAME",
        help="Instead: delete every key kept for a connection removed from the configuration "
        "(counters, histograms, breaker, tokens, caches). Lists them; --yes deletes them.",
    ),
]
YesOption = Annotated[bool, typer.Option("--yes", help="Really delete (with --purge-connection).")]

#: Counters shown as the main columns of `unsub stats`; every other one is listed per connection.
MAIN_COUNTERS: Final = ("delivered", "retried", "dead_lettered")
#: Prefix of the per-reason dead-letter counters.
DEAD_PREFIX: Final = "dead:"
NO_CONNECTIONS: Final = (
    "no connections configured, so there is nothing to count per connection: give the workers' "
    f"configuration with --config FILE or {CONFIG_ENV_VAR}=FILE"
)
STATS_COLUMNS: Final = (
    Column("connection"),
    Column("delivered", numeric=True),
    Column("retried", numeric=True),
    Column("dead-lettered", numeric=True),
    Column("pending", numeric=True),
    Column("waiting", numeric=True),
    Column("breaker"),
)
STATUS_COLUMNS: Final = (
    Column("connection"),
    Column("target"),
    Column("state"),
    Column("tries", numeric=True),
    Column("at (UTC)"),
)
#: Delivery fields shown in the status table's columns; every other one is listed under it.
_STATUS_MAIN: Final = frozenset(
    {"connection", "target", "state", "attempts", "delivered_at", "next_attempt_at", "updated_at"}
)


def stats(
    config: ConfigOption = None,
    as_json: JsonOption = False,
    purge_connection: PurgeOption = None,
    yes: YesOption = False,
) -> None:
    """Counts per connection and outcome, waiting records, breakers and dead letters (from Redis).

    Give the workers' configuration (--config or UNSUB_CONFIG): counts are kept per connection.
    --purge-connection NAME deletes what is kept for a connection no longer configured.
    """
    rt = runtime_or_exit(config)
    if purge_connection is not None:
        purge_cmd.purge_connection(rt, purge_connection, yes=yes)
        return
    snapshot = stats_mod.collect(rt.redis, rt.settings)
    if as_json:
        shown = iso_times(stats_mod.as_dict(snapshot))
        shown["warnings"] = [] if snapshot.connections else [NO_CONNECTIONS]
        console.print_json(json.dumps(shown))
        return
    if snapshot.connections:
        console.print(stats_view(snapshot))
    else:
        console.print(f"[yellow]warning:[/] {NO_CONNECTIONS}", highlight=False)
    for block in totals_view(snapshot):
        console.print(block)


def stats_view(snapshot: stats_mod.Snapshot) -> Records:
    """The main columns, one row per connection, then nothing else (see :func:`connection_details`)."""
    rows: list[list[Cell]] = []
    for c in snapshot.connections:
        counts = [str(c.counters.get(k, 0)) for k in MAIN_COUNTERS]
        breaker = Text(c.breaker, style="" if c.breaker == "closed" else "bold red")
        rows.append([c.name, *counts, str(c.pending), str(c.waiting_retries), breaker])
    return Records(STATS_COLUMNS, rows, title="connections")


def connection_details(c: stats_mod.ConnectionStats, now: float) -> Pairs:
    """Everything about one connection beyond the main columns, every counter included."""
    pairs: list[tuple[str, Cell]] = [("type", c.type)]
    if not c.enabled:
        pairs.append(("enabled", "no"))
    pairs.append(("oldest pending", format_age(c.oldest_pending_age_s)))
    if c.next_retry_at is not None:
        pairs.append(("next retry in", format_age(max(c.next_retry_at - now, 0))))
    if c.breaker != "closed":
        until = format_time(c.breaker_open_until) if c.breaker_open_until else "-"
        pairs += [("breaker reason", c.breaker_reason or "-"), ("open until (UTC)", until)]
    pairs.append(("dead letters now", str(c.dead_letters_now)))
    others = {k: v for k, v in c.counters.items() if k not in MAIN_COUNTERS}
    pairs += [(k, str(v)) for k, v in sorted(others.items()) if not k.startswith(DEAD_PREFIX)]
    pairs += [(k, str(v)) for k, v in sorted(others.items()) if k.startswith(DEAD_PREFIX)]
    return Pairs(c.name, pairs)


def totals_view(snapshot: stats_mod.Snapshot) -> list[Pairs]:
    """Per-connection details, intake counters and dead letters by reason."""
    blocks = [connection_details(c, snapshot.taken_at) for c in snapshot.connections]
    blocks.append(
        Pairs("intake", [(k, str(v)) for k, v in sorted(snapshot.intake.items())] or [("", "none")])
    )
    now_by_reason = [(r, str(n)) for r, n in snapshot.dead_letters_by_reason.items()]
    blocks.append(Pairs(f"dead letters now: {snapshot.dead_letters_now}", now_by_reason))
    ever = [(r, str(n)) for r, n in sorted(snapshot.dead_letters_total_by_reason.items())]
    blocks.append(Pairs("dead-lettered since the start, by reason", ever or [("", "none")]))
    return blocks


def status(
    request_id: Annotated[str | None, typer.Argument(help="The request id (idempotency key).")] = None,
    email: Annotated[str | None, typer.Option("--email", help="Every request for this address.")] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Per target connection: state, attempts and timestamps of one request (compliance evidence).

    Give a REQUEST_ID (printed by `unsub send`, or the request_id your service published) or
    --email ADDRESS for every request for that address. Exit 0 when found, 1 when nothing is known
    (never seen, or past the retention).
    """
    if request_id is None and email is None:
        fail("say which request: unsub status REQUEST_ID, or unsub status --email ADDRESS", Exit.USAGE)
    if request_id is not None and email is not None:
        fail("give a REQUEST_ID or --email ADDRESS, not both", Exit.USAGE)
    rt = runtime_or_exit(config)
    ids = [request_id] if request_id is not None else _ids_for(rt, email or "")
    found = {rid: status_mod.read(rt.redis, rid) for rid in ids}
    known = {rid: s for rid, s in found.items() if s is not None}
    if as_json:
        console.print_json(
            json.dumps({rid: iso_times(s.model_dump(mode="json")) for rid, s in known.items()})
        )
    else:
        for rid, request_status in known.items():
            for part in status_view(rid, request_status):
                console.print(part)
    if not known:
        fail("no such request (never received, or older than the status retention)", Exit.FAILED)


def _ids_for(rt: Any, email: str) -> list[str]:
    try:
        return status_mod.request_ids_for_email(rt.redis, normalize_email(email))
    except ValueError as exc:
        fail(str(exc), Exit.USAGE)


def status_view(request_id: str, found: status_mod.RequestStatus) -> list[Any]:
    """The request's heading, its deliveries as rows, then every other field of each delivery."""
    meta = found.meta
    heading: list[tuple[str, Cell]] = []
    if meta:
        heading = [
            ("address", meta.email_masked),
            ("scope", meta.scope),
            ("source", meta.source),
            ("requested", meta.requested_at),
            ("accepted (UTC)", format_time(meta.accepted_at)),
        ]
    rows = [_delivery_row(d) for d in found.deliveries]
    notes = [_delivery_notes(d, meta.accepted_at if meta else None) for d in found.deliveries]
    return [Pairs(request_id, heading), Records(STATUS_COLUMNS, rows), *filter(None, notes)]


def _delivery_row(d: status_mod.DeliveryStatus) -> list[Cell]:
    if d.delivered_at:
        when = format_time(d.delivered_at)
    elif d.next_attempt_at:
        when = f"next {format_time(d.next_attempt_at)}"
    else:
        when = format_time(d.updated_at)
    return [d.connection, d.target, d.state.value, str(d.attempts), when]


def _delivery_notes(d: status_mod.DeliveryStatus, accepted_at: float | None) -> Pairs | None:
    """Every field of the delivery the table does not show (reason, message, duplicate_of, ...)."""
    shown = d.model_dump(mode="json", exclude=set(_STATUS_MAIN), exclude_none=True)
    if accepted_at is not None and abs(shown.get("accepted_at", accepted_at) - accepted_at) < 1:
        shown.pop("accepted_at", None)  # the request's own, in its heading
    message = shown.pop("message", None)
    if not shown and not message:
        return None
    pairs: list[tuple[str, Cell]] = [
        (k, format_time(v) if k.endswith("_at") else str(v)) for k, v in shown.items()
    ]
    return Pairs(f"{d.connection} {d.target}", pairs, notes=[message] if message else [])
