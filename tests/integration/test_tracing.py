"""A full trace in a real backend: producer span → process span → delivery span (Zipkin)."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.zipkin.json import ZipkinExporter

from devenv.kafka import KafkaBroker
from devenv.registry import SchemaRegistry
from devenv.zipkin import ZipkinServer
from tests.integration.rig import (
    TOKEN,
    ConsumerProcess,
    SandboxProcess,
    Topics,
    produce_traced_engagements,
)

MARKER_EMAIL = "marker.person@pii-marker.example"


@pytest.fixture(scope="module")
def zipkin() -> Iterator[ZipkinServer]:
    server = ZipkinServer().start()
    yield server
    server.cleanup()


def fetch(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def test_trace_producer_to_process_to_delivery_in_zipkin(
    kafka: KafkaBroker,
    registry: SchemaRegistry,
    sandbox: SandboxProcess,
    topics: Topics,
    zipkin: ZipkinServer,
    tmp_path: Path,
) -> None:
    exporter = ZipkinExporter(endpoint=zipkin.spans_endpoint)
    trace_ids = produce_traced_engagements(kafka, registry.url, topics, exporter, 5, MARKER_EMAIL)

    consumer = ConsumerProcess(
        tmp_path,
        kafka,
        topics,
        registry.url,
        sandbox.url,
        "traced",
        OTEL_TRACES_EXPORTER="zipkin",
        OTEL_EXPORTER_ZIPKIN_ENDPOINT=zipkin.spans_endpoint,
        OTEL_SERVICE_NAME="capi-consumer",
        OTEL_BSP_SCHEDULE_DELAY="100",
    ).start()
    try:
        consumer.wait_final(5)
        assert consumer.terminate() == 0  # flushes the span exporter
    finally:
        consumer.stop()

    traces: list[list[dict[str, Any]]] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        traces = [fetch(f"{zipkin.url}/api/v2/trace/{trace_id}") for trace_id in trace_ids]
        if all(len(spans) >= 2 for spans in traces) and any(
            s["name"] == "post" for spans in traces for s in spans
        ):
            break
        time.sleep(0.5)
    with_delivery = 0
    for spans in traces:
        by_name = {span["name"]: span for span in spans}
        send = by_name[f"send {topics.engagement}"]
        process = by_name[f"process {topics.engagement}"]
        assert process["parentId"] == send["id"]
        assert process["localEndpoint"]["serviceName"] == "capi-consumer"
        assert process["tags"]["messaging.system"] == "kafka"
        assert process["tags"]["messaging.destination.name"] == topics.engagement
        assert process["tags"]["messaging.consumer.group.name"] == "traced"
        assert "messaging.kafka.offset" in process["tags"]
        if "post" in by_name:  # the batch's delivery span sits under its first traced message
            post = by_name["post"]
            with_delivery += 1
            assert post["parentId"] == process["id"]
            assert post["kind"] == "CLIENT"
            assert post["tags"]["http.response.status_code"] == "200"
            assert post["tags"]["pinterest.request_id"]
            assert int(post["tags"]["pinterest.events.processed"]) >= 1
    assert with_delivery >= 1
    everything = json.dumps(
        fetch(f"{zipkin.url}/api/v2/traces?serviceName=capi-consumer&limit=1000")
    )
    assert MARKER_EMAIL not in everything and TOKEN not in everything
    assert "pii-marker" not in everything
