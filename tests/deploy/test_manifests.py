"""The Kubernetes manifests validate, scale on the keys the code uses, and run safely."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from producer import names
from producer.connect import parse_sentinel_url
from tests.deploy.conftest import Manifest, config_of, named, of_kind, render
from worker import keys, providers
from worker.settings import ConnectionBase, load_settings

#: Kubernetes version the manifests are validated against (kubernetes-validate ships it offline).
K8S_VERSION = "1.32.0"
SCHEMAS = Path(__file__).parent / "schemas"
KEDA_SCHEMAS = {
    "ScaledObject": SCHEMAS / "keda-scaledobject.yaml",
    "TriggerAuthentication": SCHEMAS / "keda-triggerauthentication.yaml",
}
SECRET_DIR = "/var/run/secrets/unsub"
CONNECTION_NAME = re.compile(ConnectionBase.model_fields["name"].metadata[0].pattern)
WORKER_COMPONENTS = {"intake", *(f"deliver-{t.replace('_', '-')}" for t in providers.types())}


def _strict(schema: Any) -> Any:
    """Reject unknown fields as `kubectl apply` (field validation Strict) does for a structural schema."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


def _containers(deployment: Manifest) -> list[dict[str, Any]]:
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    return containers


def _queues_of(deployment: Manifest) -> list[str]:
    args = _containers(deployment)[0]["args"]
    assert args[0] == "worker", deployment["metadata"]["name"]
    value: str = args[args.index("--queues") + 1]
    return value.split(",")


#: KEDA's Sentinel scalers and the plain ones they stand for (same metadata, plus ``sentinelMaster``).
PLAIN_TYPE = {"redis-sentinel": "redis", "redis-sentinel-streams": "redis-streams"}
#: TriggerAuthentication parameters: plain Redis, or Redis behind Sentinel.
AUTH_PARAMETERS = ({"address", "password"}, {"addresses", "password", "sentinelPassword"})


def _plain(trigger_type: str) -> str:
    return PLAIN_TYPE.get(trigger_type, trigger_type)


def _workers(docs: tuple[Manifest, ...]) -> list[Manifest]:
    return [
        d
        for d in of_kind(docs, "Deployment")
        if d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] in WORKER_COMPONENTS
    ]


def test_every_builtin_manifest_validates_against_the_kubernetes_schema(
    rendered: tuple[Manifest, ...],
) -> None:
    builtin = [d for d in rendered if not d["apiVersion"].startswith("keda.sh/")]
    assert {d["kind"] for d in builtin} >= {
        "Deployment",
        "Service",
        "ConfigMap",
        "Secret",
        "PodDisruptionBudget",
        "ServiceAccount",
    }
    for doc in builtin:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_every_keda_resource_validates_against_the_vendored_keda_crd_schema(
    rendered: tuple[Manifest, ...],
) -> None:
    keda = [d for d in rendered if d["apiVersion"].startswith("keda.sh/")]
    assert {d["kind"] for d in keda} == set(KEDA_SCHEMAS)
    for doc in keda:
        assert doc["apiVersion"] == "keda.sh/v1alpha1"
        schema = _strict(yaml.safe_load(KEDA_SCHEMAS[doc["kind"]].read_text()))
        jsonschema.validate(doc, schema)


def test_the_keda_schema_check_rejects_a_misspelt_field() -> None:
    schema = _strict(yaml.safe_load(KEDA_SCHEMAS["ScaledObject"].read_text()))
    bad = {"spec": {"scaleTargetRef": {"name": "x"}, "triggers": [], "maxReplicas": 3}}
    with pytest.raises(jsonschema.ValidationError, match="maxReplicas"):
        jsonschema.validate(bad, schema)


def test_there_is_one_worker_deployment_per_queue_and_it_consumes_only_that_queue() -> None:
    base = render("base")
    consumed = {q for d in _workers(base) for q in _queues_of(d)}
    assert consumed == {names.INTAKE_QUEUE, *providers.delivery_queues()}
    for deployment in _workers(base):
        assert len(_queues_of(deployment)) == 1


def test_worker_deployments_consume_queues_the_code_defines(rendered: tuple[Manifest, ...]) -> None:
    workers = _workers(rendered)
    assert workers
    for deployment in workers:
        component = deployment["metadata"]["labels"]["app.kubernetes.io/component"]
        (queue,) = _queues_of(deployment)
        expected = (
            names.INTAKE_QUEUE
            if component == "intake"
            else names.delivery_queue(component.removeprefix("deliver-").replace("-", "_"))
        )
        assert queue == expected


def test_the_intake_scaler_watches_the_celery_intake_list_and_the_native_stream(
    rendered: tuple[Manifest, ...],
) -> None:
    scaled = named(rendered, "ScaledObject", "unsub-intake")
    assert scaled["spec"]["scaleTargetRef"]["name"] == "unsub-intake"
    by_type = {_plain(t["type"]): t["metadata"] for t in scaled["spec"]["triggers"]}
    assert by_type["redis"]["listName"] == names.INTAKE_QUEUE
    assert int(by_type["redis"]["listLength"]) > 0
    assert by_type["redis-streams"]["stream"] == names.NATIVE_INTAKE_STREAM
    assert int(by_type["redis-streams"]["streamLength"]) > 0


def _buffer_triggers(scaled: Manifest) -> list[dict[str, str]]:
    triggers = scaled["spec"]["triggers"]
    assert triggers
    assert {_plain(t["type"]) for t in triggers} == {"redis-streams"}
    metadata: list[dict[str, str]] = [t["metadata"] for t in triggers]
    return metadata


def test_delivery_scalers_watch_the_whole_durable_buffer_of_a_connection(
    rendered: tuple[Manifest, ...],
) -> None:
    delivery = [s for s in of_kind(rendered, "ScaledObject") if s["metadata"]["name"] != "unsub-intake"]
    assert delivery
    for scaled in delivery:
        for meta in _buffer_triggers(scaled):
            connection = meta["stream"].removeprefix(keys.PREFIX + "buf:")
            assert CONNECTION_NAME.fullmatch(connection)
            assert meta["stream"] == keys.buffer_stream(connection)
            # XLEN mode: KEDA reads XPENDING instead as soon as a consumerGroup is named.
            assert "consumerGroup" not in meta
            assert int(meta["streamLength"]) > 0


def test_every_configured_connection_has_a_trigger_on_the_deployment_of_its_type(
    overlay: tuple[Manifest, ...],
) -> None:
    connections = config_of(overlay)["connections"]
    assert len(connections) == 2
    watched: dict[str, set[str]] = {}
    for scaled in of_kind(overlay, "ScaledObject"):
        target = scaled["spec"]["scaleTargetRef"]["name"]
        if target != "unsub-intake":
            watched[target] = {m["stream"] for m in _buffer_triggers(scaled)}
    expected: dict[str, set[str]] = {}
    for conn in connections:
        deployment = f"unsub-deliver-{conn['type'].replace('_', '-')}"
        expected.setdefault(deployment, set()).add(keys.buffer_stream(conn["name"]))
    assert watched == expected
    assert {d["metadata"]["name"] for d in _workers(overlay)} == {"unsub-intake", *expected}


def test_every_scaled_object_targets_a_worker_deployment_within_bounds(
    rendered: tuple[Manifest, ...],
) -> None:
    workers = {d["metadata"]["name"] for d in _workers(rendered)}
    targets = set()
    for scaled in of_kind(rendered, "ScaledObject"):
        spec = scaled["spec"]
        targets.add(spec["scaleTargetRef"]["name"])
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        for trigger in spec["triggers"]:
            auth = named(rendered, "TriggerAuthentication", trigger["authenticationRef"]["name"])
            assert {r["parameter"] for r in auth["spec"]["secretTargetRef"]} in AUTH_PARAMETERS
            assert trigger["metadata"]["databaseIndex"] == "0"
    assert targets == workers
    for deployment in _workers(rendered):
        assert "replicas" not in deployment["spec"], "KEDA owns the replica count"


def _secrets(docs: tuple[Manifest, ...]) -> dict[str, str]:
    secret = named(docs, "Secret", "unsub-relay-secrets")
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def test_keda_reads_the_same_redis_as_the_workers() -> None:
    data = _secrets(render("overlay"))
    broker = re.fullmatch(r"redis://(?::[^@]*@)?([^/]+)/(\d+)", data["broker_url"])
    assert broker is not None
    assert data["redis_address"] == broker.group(1)
    assert broker.group(2) == "0"


def test_the_scheduler_runs_exactly_one_replica_and_is_recreated(rendered: tuple[Manifest, ...]) -> None:
    scheduler = named(rendered, "Deployment", "unsub-scheduler")
    assert scheduler["spec"]["replicas"] == 1
    assert scheduler["spec"]["strategy"] == {"type": "Recreate"}
    assert _containers(scheduler)[0]["args"] == ["scheduler"]
    scaled_targets = {s["spec"]["scaleTargetRef"]["name"] for s in of_kind(rendered, "ScaledObject")}
    assert "unsub-scheduler" not in scaled_targets


def test_worker_grace_period_outlasts_the_shutdown_timeout_and_the_longest_batch(
    rendered: tuple[Manifest, ...],
) -> None:
    config = config_of(rendered)
    longest_call = max([c.get("timeout_s", 30.0) for c in config["connections"]] or [30.0])
    shutdown = float(config["shutdown_timeout_s"])
    batch = float(config["drain_budget_s"]) + longest_call
    for deployment in _workers(rendered):
        grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace >= shutdown + 15, deployment["metadata"]["name"]
        assert grace >= batch + 15, deployment["metadata"]["name"]


def test_every_container_is_non_root_with_a_read_only_root_and_no_capabilities(
    rendered: tuple[Manifest, ...],
) -> None:
    config = config_of(rendered)
    deployments = of_kind(rendered, "Deployment")
    assert len(deployments) >= 5
    for deployment in deployments:
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        volumes = {v["name"]: v for v in pod["volumes"]}
        for container in pod["containers"]:
            ctx = container["securityContext"]
            assert ctx["runAsNonRoot"] is True
            assert ctx["readOnlyRootFilesystem"] is True
            assert ctx["allowPrivilegeEscalation"] is False
            assert ctx["capabilities"] == {"drop": ["ALL"]}
            assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
            assert set(container["resources"]["requests"]) == {"cpu", "memory"}
            assert set(container["resources"]["limits"]) == {"cpu", "memory"}
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            # The only writable places: /tmp (and the health files under it) on an emptyDir.
            assert "emptyDir" in volumes[mounts["/tmp"]]
            assert str(config["health_dir"]).startswith("/tmp/")
            assert SECRET_DIR in mounts
            env = {e["name"]: e.get("value") for e in container["env"]}
            assert env["UNSUB_CONFIG"].startswith(
                next(p for p, n in mounts.items() if "configMap" in volumes[n]) + "/"
            )
            assert env["UNSUB_BROKER_URL_FILE"].startswith(SECRET_DIR + "/")


def test_worker_probes_read_the_health_files_through_unsub_health(rendered: tuple[Manifest, ...]) -> None:
    for deployment in _workers(rendered):
        (container,) = _containers(deployment)
        assert container["livenessProbe"]["exec"]["command"] == ["unsub", "health", "--liveness"]
        assert container["startupProbe"]["exec"]["command"] == ["unsub", "health", "--liveness"]
        assert container["readinessProbe"]["exec"]["command"] == ["unsub", "health", "--readiness"]
        assert container["livenessProbe"]["timeoutSeconds"] >= 5
        assert "ping" not in str(container)


def test_every_worker_and_the_scheduler_has_a_disruption_budget(rendered: tuple[Manifest, ...]) -> None:
    budgets = {
        p["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"]: p["spec"]
        for p in of_kind(rendered, "PodDisruptionBudget")
    }
    for deployment in [*_workers(rendered), named(rendered, "Deployment", "unsub-scheduler")]:
        labels = deployment["spec"]["selector"]["matchLabels"]
        assert budgets[labels["app.kubernetes.io/component"]] == {
            "maxUnavailable": 1,
            "selector": {"matchLabels": labels},
        }


def test_flower_and_metrics_services_reach_their_pods(rendered: tuple[Manifest, ...]) -> None:
    config = config_of(rendered)
    for service_name, port in (("unsub-flower", 5555), ("unsub-metrics", config["metrics_port"])):
        service = named(rendered, "Service", service_name)
        deployment = named(rendered, "Deployment", service_name)
        assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
        (container,) = _containers(deployment)
        assert [p["containerPort"] for p in container["ports"]] == [port]
        assert str(port) in container["args"]
        assert container["args"][container["args"].index("--address") + 1] == "0.0.0.0"  # noqa: S104 - scraped from outside the pod
    metrics = named(rendered, "Service", "unsub-metrics")
    assert metrics["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert metrics["metadata"]["annotations"]["prometheus.io/port"] == str(config["metrics_port"])
    flower = _containers(named(rendered, "Deployment", "unsub-flower"))[0]
    assert "--insecure-local" not in flower["args"]
    assert {e["name"] for e in flower["env"]} >= {"UNSUB_FLOWER_PASSWORD_FILE"}
    assert config["flower_user"]


def test_the_overlay_config_loads_with_the_real_settings_and_every_secret_file_exists(
    overlay: tuple[Manifest, ...], tmp_path: Path
) -> None:
    config = config_of(overlay)
    secret_keys = set(named(overlay, "Secret", "unsub-relay-secrets")["data"])
    text = yaml.safe_dump(config)
    referenced = set(re.findall(re.escape(SECRET_DIR) + r"/([\w.-]+)", text))
    env_files = {
        Path(e["value"]).name
        for d in of_kind(overlay, "Deployment")
        for c in _containers(d)
        for e in c["env"]
        if e["name"].endswith("_FILE")
    }
    assert referenced | env_files | {"redis_address", "redis_password"} == secret_keys
    for key in secret_keys:
        (tmp_path / key).write_text("example-secret\n")
    local = tmp_path / "config.yaml"
    local.write_text(text.replace(SECRET_DIR, str(tmp_path)))
    settings = load_settings(local)
    assert [c.name for c in settings.connections] == [c["name"] for c in config["connections"]]
    assert settings.health_dir == Path(config["health_dir"])


def test_the_sentinel_variant_has_keda_ask_the_workers_sentinels_for_the_workers_master(
    sentinel_overlay: tuple[Manifest, ...],
) -> None:
    data = _secrets(sentinel_overlay)
    broker = parse_sentinel_url(data["broker_url"])
    masters = {
        t["metadata"]["sentinelMaster"]
        for s in of_kind(sentinel_overlay, "ScaledObject")
        for t in s["spec"]["triggers"]
    }
    types = {t["type"] for s in of_kind(sentinel_overlay, "ScaledObject") for t in s["spec"]["triggers"]}

    assert data["redis_address"] == ",".join(f"{host}:{port}" for host, port in broker.sentinels)
    assert len(broker.sentinels) == 3
    assert broker.password == data["redis_password"]
    assert broker.db == 0
    assert masters == {config_of(sentinel_overlay)["sentinel_master"]}
    assert types == set(PLAIN_TYPE)


def test_the_sentinel_variant_loads_with_its_broker_url_and_publishes_wait_for_a_replica(
    sentinel_overlay: tuple[Manifest, ...], tmp_path: Path
) -> None:
    data = _secrets(sentinel_overlay)
    for key, value in data.items():
        (tmp_path / key).write_text(value)
    text = yaml.safe_dump(config_of(sentinel_overlay)).replace(SECRET_DIR, str(tmp_path))
    (tmp_path / "config.yaml").write_text(text)

    settings = load_settings(tmp_path / "config.yaml", broker_url=data["broker_url"])

    assert settings.sentinel == {"sentinel_master": "unsub", "sentinel_password": data["sentinel_password"]}
    assert settings.publish_replicas == 1
    assert settings.state_redis_url == data["broker_url"]
