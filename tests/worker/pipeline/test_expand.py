"""Planning: every provider type has its own branch, and nothing is planned wider than asked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from producer.contract import parse_request
from worker.pipeline.deadletters import Reason
from worker.pipeline.expand import Unplannable, plan
from worker.records import DeliveryRecord
from worker.settings import ConnectionBase, Settings, load_settings

EXAMPLE_CONFIG = Path(__file__).parents[3] / "worker" / "examples" / "sandbox.yaml"
ACCEPTED_AT = 1_700_000_000.0


class FutureConnection(ConnectionBase):
    """A provider type the planner has never heard of."""

    type: str = "carrier_pigeon"


@pytest.fixture(scope="module")
def settings() -> Settings:
    return load_settings(EXAMPLE_CONFIG)


def targets(settings: Settings, **fields: Any) -> dict[str, list[str]]:
    """Planned targets per connection (``!reason`` for what cannot be planned)."""
    planned: dict[str, list[str]] = {}
    for item in plan(parse_request({"email": "a@example.com", **fields}), settings, ACCEPTED_AT):
        value = item.target if isinstance(item, DeliveryRecord) else f"!{item.reason}"
        planned.setdefault(item.connection, []).append(value)
    return planned


def test_a_global_request_plans_each_providers_broadest_opt_out(settings: Settings) -> None:
    assert targets(settings) == {
        "cc-partner": ["account"],
        "cc-contacts": ["account"],
        "whatcounts": ["global"],
        "whatcounts-ck": ["global"],
        "insider": ["global"],
        "easytools": ["account"],
    }


def test_all_accounts_is_planned_only_for_the_partner_connection(settings: Settings) -> None:
    planned = targets(
        settings, connections=["cc-partner", "cc-contacts"], targets={"cc-partner": {"all_accounts": True}}
    )

    assert planned == {"cc-partner": ["all_accounts"], "cc-contacts": ["account"]}


def test_a_list_request_plans_the_named_lists_and_groups_or_the_connections_defaults(
    settings: Settings,
) -> None:
    planned = targets(
        settings,
        scope="list",
        targets={"whatcounts": {"list_ids": ["9", "12"]}, "insider": {"group": "promotions"}},
    )

    assert planned == {
        "cc-partner": ["account"],
        "cc-contacts": ["account"],
        "whatcounts": ["list:9", "list:12"],
        "whatcounts-ck": ["list:7"],
        "insider": ["group:promotions"],
        "easytools": ["account"],
    }


def test_a_list_request_with_no_list_or_group_anywhere_is_unplannable_not_global(settings: Settings) -> None:
    no_defaults = {"default_list_id": None, "default_group": None}
    bare = settings.model_copy(
        update={"connections": [c.model_copy(update=no_defaults) for c in settings.connections]}
    )

    planned = targets(bare, scope="list", connections=["whatcounts", "insider"])

    assert planned == {"whatcounts": [f"!{Reason.NO_LIST_TARGET}"], "insider": [f"!{Reason.NO_LIST_TARGET}"]}


def test_a_connection_type_the_planner_does_not_know_is_unplannable_not_account_wide(
    settings: Settings,
) -> None:
    future = FutureConnection(name="pigeon", base_url="http://127.0.0.1:1/")
    odd = settings.model_copy(update={"connections": [future]})

    [item] = plan(parse_request({"email": "a@example.com"}), odd, ACCEPTED_AT)

    assert isinstance(item, Unplannable)
    assert (item.connection, item.reason) == ("pigeon", Reason.UNKNOWN_CONNECTION)
    assert "carrier_pigeon" in item.message
