"""Deployment artefacts: docker-compose, Dockerfile and Kubernetes manifests stay valid."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from consumer.config import load_config
from consumer.mapping import compile_mapping

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "kubernetes"


def manifests() -> dict[str, dict[str, Any]]:
    found = {}
    for path in K8S.glob("*.yaml"):
        for document in yaml.safe_load_all(path.read_text()):
            if document and "kind" in document and document["kind"] != "Kustomization":
                found[document["kind"]] = document
    return found


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


def test_dockerfile_non_root_multi_stage_with_healthcheck() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert text.count("FROM ") >= 2
    assert "USER 10001" in text and "HEALTHCHECK" in text
    assert "python:3.11" in text and ":latest" not in text


def test_kubernetes_deployment_probes_security_and_grace() -> None:
    found = manifests()
    assert {
        "Deployment",
        "ConfigMap",
        "Secret",
        "PodDisruptionBudget",
        "Service",
        "ScaledObject",
    } <= set(found)
    pod = found["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        assert container[probe]["httpGet"]["path"] == path
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["resources"]["requests"] and container["resources"]["limits"]
    grace_s = float(found["ConfigMap"]["data"]["CAPI_SHUTDOWN_GRACE_S"])
    assert pod["terminationGracePeriodSeconds"] >= grace_s + 5


def test_kubernetes_configmap_settings_and_mapping_are_accepted(tmp_path: Path) -> None:
    data = manifests()["ConfigMap"]["data"]
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
    assert config.dedup_backend == "redis"
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
