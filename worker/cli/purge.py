"""`unsub stats --purge-connection NAME`: forget a connection removed from the configuration."""

from __future__ import annotations

from typing import Any

from worker.cli._common import Exit, console, err_console, fail
from worker.pipeline.purge import plan_purge, purge


def purge_connection(rt: Any, name: str, *, yes: bool) -> None:
    """Delete every key of ``name`` (exit 2, deleting nothing, if it may not go or without ``yes``)."""
    if not rt.settings.connections:
        fail(
            "give the workers' configuration (--config) so the purge can see NAME is no longer in it",
            Exit.USAGE,
        )
    plan = plan_purge(rt.redis, name, frozenset(c.name for c in rt.settings.connections))
    for refusal in plan.refusals:
        err_console.print(f"refused: {refusal}", style="red", highlight=False, markup=False)
    if plan.refusals:
        fail(f"nothing of {name} was deleted", Exit.USAGE)
    if not plan.keys:
        console.print(f"no keys of {name} left: nothing to purge", highlight=False, markup=False)
        return
    if not yes:
        for key in plan.keys:
            console.print(f"  {key}", highlight=False, markup=False)
        fail(f"this would delete the {len(plan.keys)} key(s) above for good; add --yes to do it", Exit.USAGE)
    deleted = purge(rt.redis, plan)
    console.print(f"purged {deleted} key(s) of connection {name}", highlight=False, markup=False)
