"""/readyz tells the truth against a real broker: each state with its reason and its gauge."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from prometheus_client.parser import text_string_to_metric_families

from devenv.kafka import KafkaBroker
from devenv.procs import free_port
from devenv.registry import SchemaRegistry
from tests.integration.rig import ConsumerProcess, SandboxProcess, Topics, make_topics


def wait_for_state(
    consumer: ConsumerProcess, state: str, timeout_s: float = 90
) -> tuple[int, dict[str, Any]]:
    """Poll /readyz until it reports `state`; its HTTP status and body."""
    deadline = time.monotonic() + timeout_s
    status, body = 0, {}
    while time.monotonic() < deadline:
        try:
            status, text = consumer.get("/readyz")
            body = orjson.loads(text)
        except OSError:
            body = {}
        if body.get("state") == state:
            return status, body
        time.sleep(0.5)
    raise AssertionError(
        f"/readyz never said {state}; last {status} {body}\n{consumer.log[-2000:]}"
    )


def state_gauge(consumer: ConsumerProcess) -> dict[str, float]:
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(consumer.get("/metrics")[1]):
        for sample in family.samples:
            if sample.name == "capi_consumer_state":
                values[sample.labels["state"]] = sample.value
    return values


def assert_state(consumer: ConsumerProcess, state: str, is_ready: bool, words: str) -> None:
    status, body = wait_for_state(consumer, state)
    assert status == (200 if is_ready else 503) and body["ok"] is is_ready
    assert words in body["reason"], body
    gauge = state_gauge(consumer)
    assert gauge[state] == 1.0 and sum(gauge.values()) == 1.0, gauge


def test_readyz_broker_unreachable(
    kafka: KafkaBroker, registry: SchemaRegistry, sandbox: SandboxProcess, topics: Topics,
    tmp_path: Path,
) -> None:  # fmt: skip
    consumer = ConsumerProcess(
        tmp_path, kafka, topics, registry.url, sandbox.url, "no-broker",
        CAPI_KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}",
    )  # fmt: skip
    try:
        consumer.start()
        assert_state(consumer, "broker_unreachable", False, "no Kafka broker reachable")
    finally:
        consumer.stop()


def test_readyz_subscribed_topic_missing(
    kafka: KafkaBroker, registry: SchemaRegistry, sandbox: SandboxProcess, topics: Topics,
    tmp_path: Path,
) -> None:  # fmt: skip
    missing = f"{topics.orders}.typo"
    consumer = ConsumerProcess(
        tmp_path, kafka, topics, registry.url, sandbox.url, "typo", CAPI_TOPICS=missing
    )
    try:
        consumer.start()
        assert_state(consumer, "topic_missing", False, missing)
    finally:
        consumer.stop()


def test_readyz_more_replicas_than_partitions_is_ready_and_says_so(
    kafka: KafkaBroker, registry: SchemaRegistry, sandbox: SandboxProcess, tmp_path: Path,
) -> None:  # fmt: skip
    small = make_topics(kafka, f"one{uuid.uuid4().hex[:8]}", tmp_path, partitions=1)
    members = [
        ConsumerProcess(tmp_path, kafka, small, registry.url, sandbox.url, "crowd")
        for _ in range(3)  # two topics of one partition each: one member gets nothing
    ]
    try:
        for member in members:
            member.start()
        deadline = time.monotonic() + 90
        states: list[str] = []
        while time.monotonic() < deadline:
            states = [orjson.loads(m.get("/readyz")[1]).get("state") for m in members]
            if sorted(states) == ["consuming", "consuming", "no_partitions"]:
                break
            time.sleep(0.5)
        assert sorted(states) == ["consuming", "consuming", "no_partitions"], states
        idle = members[states.index("no_partitions")]
        assert_state(idle, "no_partitions", True, "more replicas than partitions")
    finally:
        for member in members:
            member.stop()
