"""The alert rules use only metric names that `unsub metrics` really exports."""

from __future__ import annotations

import re
from typing import Any

import fakeredis
import yaml

from tests.deploy.conftest import DEPLOY
from worker.metrics import registry_for
from worker.settings import load_settings

RULES = DEPLOY / "alerts" / "unsub-relay.rules.yaml"
#: Series from kube-state-metrics, which the rules may use besides the exporter's.
KUBE_STATE_METRICS = {"kube_deployment_status_replicas_available"}
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def _exported_series() -> set[str]:
    """Every series name the exporter can produce, from its own metric families."""
    registry = registry_for(fakeredis.FakeRedis(), load_settings(None))
    series: set[str] = set()
    for family in registry.collect():
        series.update(family.name + suffix for suffix in SUFFIXES[family.type])
    return series


def _rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _metric_names(expr: str) -> set[str]:
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    return set(re.findall(r"\b(?:unsub|kube)_[a-z0-9_]+\b", without_strings))


def test_every_metric_an_alert_uses_is_exported() -> None:
    exported = _exported_series()
    assert {"unsub_dead_lettered_total", "unsub_oldest_pending_age_seconds", "unsub_breaker_open"} <= exported
    used = set()
    for rule in _rules():
        names = _metric_names(rule["expr"])
        assert names, rule["alert"]
        used |= names
    assert used - KUBE_STATE_METRICS <= exported
    assert used & KUBE_STATE_METRICS == KUBE_STATE_METRICS


def test_the_name_check_would_catch_a_misspelt_metric() -> None:
    assert "unsub_dead_letter_total" not in _exported_series()
    assert _metric_names('sum(unsub_dead_letter_total{reason="x_y"})') == {"unsub_dead_letter_total"}


def test_the_required_alerts_exist_with_severity_and_a_runbook() -> None:
    rules = {rule["alert"]: rule for rule in _rules()}
    assert {
        "UnsubDeadLettersGrowing",
        "UnsubOldestPendingTooOld",
        "UnsubBreakerOpen",
        "UnsubSchedulerHeartbeatStale",
        "UnsubNoWorker",
    } <= set(rules)
    readme = (DEPLOY / "README.md").read_text().lower()
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in {"warning", "critical"}
        anchor = rule["annotations"]["runbook"].split("#", 1)[1]
        assert f"### {anchor}" in readme, f"{name}: no runbook section {anchor}"
    assert "unsub_oldest_pending_age_seconds" in rules["UnsubOldestPendingTooOld"]["expr"]
