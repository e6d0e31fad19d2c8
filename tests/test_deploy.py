"""Deployment artefacts: docker-compose, Dockerfile and Kubernetes manifests stay valid."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from consumer.config import Config, load_config
from consumer.conversion.rules import compile_mapping
from consumer.engine.pipeline import CLOSE_MARGIN_S
from consumer.observability.telemetry import SHUTDOWN_TIMEOUT_S

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "kubernetes"


def rendered(directory: str) -> list[dict[str, Any]]:
    """What `kubectl apply -k deploy/kubernetes/<directory>` would send, rendered by kustomize."""
    from devenv.kustomize import render

    return [d for d in yaml.safe_load_all(render(K8S / directory)) if d]


def manifests(directory: str = "overlays/example") -> dict[str, dict[str, Any]]:
    """The consumer's own objects by kind (the Redis of components/redis left out)."""
    return {
        document["kind"]: document
        for document in rendered(directory)
        if document["metadata"]["name"] != "capi-redis"
    }


def compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_docker_compose_config_is_valid() -> None:
    command = compose_command()
    if command is None:
        pytest.skip("no docker compose client on this machine")
    result = subprocess.run(
        [*command, "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert {"kafka", "registry", "jaeger", "sandbox", "producer", "consumer"} <= set(services)


def test_docker_compose_waits_for_the_drain_before_killing() -> None:
    consumer = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["consumer"]
    grace = consumer["stop_grace_period"]
    assert grace.endswith("s")
    default_drain_s = Config.__dataclass_fields__["shutdown_grace_s"].default
    assert isinstance(default_drain_s, float)
    assert float(grace[:-1]) >= default_drain_s + CLOSE_MARGIN_S + SHUTDOWN_TIMEOUT_S


def test_dockerfile_non_root_multi_stage_with_healthcheck() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert text.count("FROM ") >= 2
    assert "USER 10001" in text and "HEALTHCHECK" in text
    assert "python:3.11" in text and ":latest" not in text


def test_kubernetes_deployment_probes_security_and_grace() -> None:
    found = manifests()
    assert {
        "Namespace",
        "Deployment",
        "ConfigMap",
        "Secret",
        "PodDisruptionBudget",
        "Service",
        "ScaledObject",
        "TriggerAuthentication",
    } <= set(found)
    pod = found["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        assert container[probe]["httpGet"]["path"] == path
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["resources"]["requests"] and container["resources"]["limits"]
    grace_s = float(found["ConfigMap"]["data"]["CAPI_SHUTDOWN_GRACE_S"])
    closing_s = CLOSE_MARGIN_S + SHUTDOWN_TIMEOUT_S  # the clients' close, the exporters' flush
    assert pod["terminationGracePeriodSeconds"] >= grace_s + closing_s


@pytest.mark.parametrize(
    ("directory", "dedup"), [("base", "memory"), ("overlays/example", "redis")]
)
def test_kubernetes_configmap_settings_and_mapping_are_accepted(
    tmp_path: Path, directory: str, dedup: str
) -> None:
    data = manifests(directory)["ConfigMap"]["data"]
    mapping = compile_mapping(yaml.safe_load(data["mapping.yaml"]))
    assert mapping.rules
    mapping_file = tmp_path / "mapping.yaml"
    mapping_file.write_text(data["mapping.yaml"])
    secret = tmp_path / "secret"
    secret.write_text("value")
    env = {k: v for k, v in data.items() if k.startswith("CAPI_")}
    env.update(
        CAPI_MAPPING_FILE=str(mapping_file),
        CAPI_ACCESS_TOKEN_FILE=str(secret),
        CAPI_KAFKA_SASL_PASSWORD_FILE=str(secret),
    )
    config = load_config(env)
    assert config.dedup_backend == dedup
    assert "value" not in str(config.masked())


def test_kubernetes_env_references_only_variables_defined_before_them() -> None:
    """Kubernetes expands $(VAR) only for variables earlier in the same list; others stay
    literal (an OTEL_RESOURCE_ATTRIBUTES of "k8s.pod.name=$(POD_NAME)" would reach the backend)."""
    import re

    deployment = manifests()["Deployment"]
    for container in deployment["spec"]["template"]["spec"]["containers"]:
        defined: set[str] = set()
        for variable in container.get("env", []):
            for name in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", variable.get("value", "")):
                assert name in defined, f"{variable['name']} uses $({name}) before it is defined"
            defined.add(variable["name"])


KUBERNETES_VERSION = "1.31"


@pytest.mark.parametrize("directory", ["base", "overlays/example"])
def test_kubernetes_rendered_manifests_are_valid_against_the_api_schemas(directory: str) -> None:
    import kubernetes_validate

    objects = rendered(directory)
    for document in objects:
        if document["apiVersion"].startswith("keda.sh/"):
            continue  # a CRD: kubernetes-validate ships no schema for it (checked below)
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
    namespaces = {d["metadata"]["name"] for d in objects if d["kind"] == "Namespace"}
    assert namespaces == {"capi"}
    for document in objects:
        if document["kind"] != "Namespace":
            assert document["metadata"].get("namespace") == "capi", document["metadata"]


def test_kubernetes_base_applies_without_keda_and_the_optional_parts_fit_together() -> None:
    base = rendered("base")
    assert not [d for d in base if d["apiVersion"].startswith("keda.sh/")]
    assert manifests("base")["ConfigMap"]["data"]["CAPI_DEDUP_BACKEND"] == "memory"
    found = manifests()
    scaled, auth, secret = found["ScaledObject"], found["TriggerAuthentication"], found["Secret"]
    assert scaled["spec"]["scaleTargetRef"]["name"] == found["Deployment"]["metadata"]["name"]
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    assert trigger["metadata"]["consumerGroup"] == found["ConfigMap"]["data"]["CAPI_KAFKA_GROUP_ID"]
    for ref in auth["spec"]["secretTargetRef"]:
        assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]
    redis = [d for d in rendered("overlays/example") if d["metadata"]["name"] == "capi-redis"]
    assert {d["kind"] for d in redis} == {"Deployment", "Service"}
    assert found["ConfigMap"]["data"]["CAPI_REDIS_URL"].startswith("redis://capi-redis:")


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    result = subprocess.run(
        [hadolint, "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("promtool missing: make test installs Debian's prometheus package")
        pytest.skip("promtool not installed (Debian's prometheus package; make test installs it)")
    return found


def test_prometheus_alert_rules_pass_promtool() -> None:
    result = subprocess.run(
        [promtool(), "check", "rules", str(ROOT / "deploy" / "prometheus" / "alerts.yaml")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_metrics_page_passes_promtool_check_metrics() -> None:
    from tests.test_telemetry import every_metric_page

    result = subprocess.run(
        [promtool(), "check", "metrics"],
        input=every_metric_page(),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


# Each readiness state an operator must act on, and the alert that must fire for it alone.
STATE_ALERTS = {
    "broker_unreachable": "CapiBrokerUnreachable",
    "topic_missing": "CapiTopicMissing",
    "registry_unreachable": "CapiRegistryUnreachable",
    "dead_letter_ceiling": "CapiDeadLetterCeiling",
    "partitions_lost": "CapiPartitionsLost",
    "dead_letter_failing": "CapiDeadLetterWriteFailing",
}


@pytest.mark.parametrize("state", sorted(STATE_ALERTS))
def test_alert_rule_selects_its_readiness_state_and_no_other(tmp_path: Path, state: str) -> None:
    """promtool evaluates the real rules over series where only `state` is 1."""
    from consumer.observability.health import STATES

    rules_file = ROOT / "deploy" / "prometheus" / "alerts.yaml"
    rules = {
        rule["alert"]: rule
        for group in yaml.safe_load(rules_file.read_text())["groups"]
        for rule in group["rules"]
    }
    series = [
        {
            "series": f'capi_consumer_state{{state="{s}", pod="capi-0"}}',
            "values": ("1" if s == state else "0") + "x15",
        }
        for s in STATES
    ]
    checks = []
    for other_state, alert in STATE_ALERTS.items():
        rule = rules[alert]
        expected = []
        if other_state == state:
            expected = [{"exp_labels": rule["labels"], "exp_annotations": rule["annotations"]}]
        checks.append({"eval_time": "10m", "alertname": alert, "exp_alerts": expected})
    test_file = tmp_path / "alerts.test.yaml"
    test_file.write_text(
        yaml.safe_dump(
            {
                "rule_files": [str(rules_file)],
                "evaluation_interval": "1m",
                "tests": [{"interval": "1m", "input_series": series, "alert_rule_test": checks}],
            }
        )
    )
    result = subprocess.run(
        [promtool(), "test", "rules", str(test_file)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
