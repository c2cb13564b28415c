"""Rendering `deploy/k8s` for the deployment tests.

With `kubectl` on PATH, the base, the example overlay and its Sentinel variant are rendered by
`kubectl kustomize` (the real thing). Without it, the base is read straight from the files its
kustomization lists (plus the ConfigMap its generator would make), and the overlay tests skip saying
so: the overlays' patches and generators need kustomize itself.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BASE = DEPLOY / "k8s" / "base"
OVERLAY = DEPLOY / "k8s" / "overlays" / "example"
#: The example overlay with Redis behind Sentinel.
SENTINEL_OVERLAY = DEPLOY / "k8s" / "overlays" / "sentinel"
TARGETS = {"base": BASE, "overlay": OVERLAY, "sentinel": SENTINEL_OVERLAY}

Manifest = dict[str, Any]


@functools.cache
def _kubectl_render(path: Path) -> tuple[Manifest, ...]:
    out = subprocess.run(
        ["kubectl", "kustomize", str(path)], check=True, capture_output=True, text=True, timeout=120
    ).stdout
    return tuple(doc for doc in yaml.safe_load_all(out) if doc)


def _raw_base() -> tuple[Manifest, ...]:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    docs: list[Manifest] = []
    for resource in kustomization["resources"]:
        docs.extend(d for d in yaml.safe_load_all((BASE / resource).read_text()) if d)
    for generator in kustomization.get("configMapGenerator", []):
        data = {Path(f).name: (BASE / f).read_text() for f in generator["files"]}
        docs.append(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": generator["name"]}, "data": data}
        )
    return tuple(docs)


def render(target: str) -> tuple[Manifest, ...]:
    if shutil.which("kubectl"):
        return _kubectl_render(TARGETS[target])
    if target == "base":
        return _raw_base()
    pytest.skip("kubectl is not on PATH: the overlay needs kustomize to render (the base was checked raw)")


@pytest.fixture(params=sorted(TARGETS))
def rendered(request: pytest.FixtureRequest) -> tuple[Manifest, ...]:
    """Every manifest of one kustomize target (base, the example overlay, its Sentinel variant)."""
    return render(request.param)


@pytest.fixture(params=["overlay", "sentinel"])
def overlay(request: pytest.FixtureRequest) -> tuple[Manifest, ...]:
    """Every manifest of one overlay (the example, then its Sentinel variant)."""
    return render(request.param)


@pytest.fixture
def sentinel_overlay() -> tuple[Manifest, ...]:
    return render("sentinel")


def of_kind(docs: tuple[Manifest, ...], kind: str) -> list[Manifest]:
    return [d for d in docs if d["kind"] == kind]


def named(docs: tuple[Manifest, ...], kind: str, name: str) -> Manifest:
    (found,) = [d for d in of_kind(docs, kind) if d["metadata"]["name"] == name]
    return found


def config_of(docs: tuple[Manifest, ...]) -> dict[str, Any]:
    """The settings file every pod mounts (the rendered ConfigMap's config.yaml)."""
    (cm,) = [d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"].startswith("unsub-relay-config")]
    config: dict[str, Any] = yaml.safe_load(cm["data"]["config.yaml"])
    return config
