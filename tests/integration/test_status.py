"""Operator insight against a running consumer: metric names used by the dashboard and alert
rules exist, `consumer status` summarizes the instance."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import orjson

from devenv.kafka import KafkaBroker
from devenv.procs import ROOT
from devenv.registry import SchemaRegistry
from tests.integration.rig import TOKEN, ConsumerProcess, SandboxProcess, Topics, produce_traffic

POISON = [b"\x00\x00\x00\x00\x01"]


def names_used(path: Path) -> set[str]:
    return set(re.findall(r"\b(capi_[a-z_]+)", path.read_text()))


def test_dashboard_alerts_and_status_match_a_running_instance(
    kafka: KafkaBroker,
    registry: SchemaRegistry,
    sandbox: SandboxProcess,
    topics: Topics,
    tmp_path: Path,
) -> None:
    traffic = produce_traffic(kafka, registry.url, topics, 1500, seed=31, poison=POISON)
    sandbox.faults(
        error_rate=0.5,
        error_status=503,
        fail_event_ids=[event_id for _, event_id in sorted(traffic.expected_ids)[:3]],
    )
    consumer = ConsumerProcess(
        tmp_path,
        kafka,
        topics,
        registry.url,
        sandbox.url,
        "status",
        CAPI_KAFKA_STATISTICS_INTERVAL_MS="500",
        CAPI_BATCH_MAX_EVENTS="50",
        CAPI_EQS_TOKEN=TOKEN,  # Pinterest's event quality score, read from the sandbox
    ).start()
    try:
        consumer.wait_final(len(traffic.produced))
        consumer.wait_for(lambda s: bool(s["lag"]), 30, "lag statistics")
        consumer.wait_for(lambda s: bool(s["pinterest_eqs"]), 30, "the event quality score")
        status, metrics = consumer.get("/metrics")
        assert status == 200
        exported = set(re.findall(r"^(capi_[a-z_]+)", metrics, re.M))
        for artefact in (
            ROOT / "deploy" / "grafana" / "capi-consumer.json",
            ROOT / "deploy" / "prometheus" / "alerts.yaml",
        ):
            missing = names_used(artefact) - exported
            assert not missing, f"{artefact.name} uses metrics nobody exports: {missing}"
        json.loads((ROOT / "deploy" / "grafana" / "capi-consumer.json").read_text())

        url = f"http://127.0.0.1:{consumer.health_port}"
        human = subprocess.run(
            [sys.executable, "-m", "consumer", "status", "--url", url],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
        assert human.returncode == 0, human.stderr
        for text in (
            "ready        yes",
            "partitions   8 assigned",
            "retries      503",
            "dead letters",
            "pinterest.event_failed",
            "decode.",
            "match coverage",
            "em",
            "Pinterest's event quality score (worst per account): 54975588517",
        ):
            assert text in human.stdout, (text, human.stdout)
        as_json = subprocess.run(
            [sys.executable, "-m", "consumer", "status", "--url", url, "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
        summary = orjson.loads(as_json.stdout)
        assert summary["totals"]["dead_lettered"] == 4
        assert summary["retries_by_cause"]["503"] > 0
        assert summary["match_coverage"]["em"] > 0.5
        # librdkafka reports lag only for partitions it has fetched from (empty ones give -1)
        assert summary["lag"] and all(lag >= 0 for lag in summary["lag"].values())
    finally:
        consumer.stop()
