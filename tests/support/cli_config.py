"""A config file for CLI tests: the given Redis and two connections (WhatCounts, Insider)."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.support.pipeline_harness import INSIDER, WHATCOUNTS


def write_cli_config(tmp_path: Path, redis_url: str) -> Path:
    path = tmp_path / "unsub.yaml"
    path.write_text(
        yaml.safe_dump({"broker_url": redis_url, "connections": [WHATCOUNTS, INSIDER]}), encoding="utf-8"
    )
    return path
