"""The default telemetry path end to end: OTLP/HTTP into a real receiver (Jaeger), read back
through its query API; a receiver that is down or slow never slows consumption."""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from prometheus_client.parser import text_string_to_metric_families

from devenv.jaeger import JaegerServer
from devenv.kafka import KafkaBroker, shared_producer
from devenv.procs import free_port
from devenv.registry import SchemaRegistry
from devenv.samples import engagement_record, load_schema, register, wire_encode
from tests.integration.rig import (
    TOKEN,
    ConsumerProcess,
    SandboxProcess,
    Topics,
    produce_traced_engagements,
)
from tests.integration.test_faults import rss_mb

MARKER_EMAIL = "otlp.marker@pii-marker.example"
OTLP_TOKEN = "otlp-secret-token-7"


@pytest.fixture(scope="module")
def jaeger() -> Iterator[JaegerServer]:
    server = JaegerServer().start()
    yield server
    server.cleanup()


class RecordingProxy:
    """Forwards OTLP requests to the receiver and keeps the headers each one carried; after
    `hang()` it takes requests and never answers, the slowest receiver there is."""

    def __init__(self, target: str) -> None:
        self.headers: list[dict[str, str]] = []
        self._hanging = threading.Event()
        self._released = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                proxy.headers.append({k.lower(): v for k, v in self.headers.items()})
                if proxy._hanging.is_set():
                    proxy._released.wait(120)
                    return
                request = urllib.request.Request(
                    target + self.path,
                    data=body,
                    headers={"Content-Type": self.headers.get("Content-Type", "")},
                )
                with urllib.request.urlopen(request, timeout=10) as answer:
                    payload = answer.read()
                    self.send_response(answer.status)
                    self.send_header("Content-Type", answer.headers.get("Content-Type", ""))
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def hang(self) -> None:
        self._hanging.set()

    def stop(self) -> None:
        self._released.set()
        self.server.shutdown()
        self.server.server_close()


def produce_traced(
    kafka: KafkaBroker, registry: SchemaRegistry, topics: Topics, jaeger: JaegerServer, count: int
) -> list[str]:
    """Engagement events, each sent under a producer span exported to the receiver by OTLP."""
    exporter = OTLPSpanExporter(endpoint=f"{jaeger.otlp_endpoint}/v1/traces")
    return produce_traced_engagements(kafka, registry.url, topics, exporter, count, MARKER_EMAIL, 5)


def tags(span: dict[str, Any]) -> dict[str, Any]:
    return {tag["key"]: tag["value"] for tag in span.get("tags", [])}


def wait_for_traces(
    jaeger: JaegerServer, trace_ids: list[str], timeout_s: float = 30
) -> list[list[dict[str, Any]]]:
    """Each trace once the receiver holds its producer, process and POST spans (or the deadline)."""
    deadline = time.monotonic() + timeout_s
    traces: list[list[dict[str, Any]]] = []
    while time.monotonic() < deadline:
        traces = [jaeger.trace(trace_id) for trace_id in trace_ids]
        names = {span["operationName"] for spans in traces for span in spans}
        if all(len(spans) >= 2 for spans in traces) and "POST" in names:
            break
        time.sleep(0.3)
    return traces


def run_consumer(tmp_path: Path, kafka: KafkaBroker, topics: Topics, registry: SchemaRegistry,
                 sandbox: SandboxProcess, group: str, count: int, **otel: str) -> str:  # fmt: skip
    """Run the consumer until `count` records are final, stop it (flushing spans); its log."""
    consumer = ConsumerProcess(
        tmp_path, kafka, topics, registry.url, sandbox.url, group, **otel
    ).start()
    try:
        consumer.wait_final(count)
        assert consumer.terminate() == 0  # shutdown flushes the span queue
    finally:
        consumer.stop()
    return consumer.log


def test_otlp_default_path_one_trace_from_producer_to_post_in_the_receiver(
    kafka: KafkaBroker,
    registry: SchemaRegistry,
    sandbox: SandboxProcess,
    topics: Topics,
    jaeger: JaegerServer,
    tmp_path: Path,
) -> None:
    trace_ids = produce_traced(kafka, registry, topics, jaeger, 5)
    log = run_consumer(
        tmp_path, kafka, topics, registry, sandbox, "otlp", 5,
        OTEL_EXPORTER_OTLP_ENDPOINT=jaeger.otlp_endpoint,  # the README's default, nothing else
        OTEL_RESOURCE_ATTRIBUTES="deployment.environment.name=it,k8s.pod.name=capi-0",
    )  # fmt: skip
    traces = wait_for_traces(jaeger, trace_ids)
    with_post = 0
    for spans in traces:
        by_name = {span["operationName"]: span for span in spans}
        send = by_name[f"send {topics.engagement}"]
        process = by_name[f"process {topics.engagement}"]
        assert process["references"][0]["spanID"] == send["spanID"]
        service = process["process"]
        assert service["serviceName"] == "capi-consumer"
        resource = tags(service)
        assert resource["deployment.environment.name"] == "it"
        assert resource["k8s.pod.name"] == "capi-0"
        attributes = tags(process)
        assert attributes["span.kind"] == "consumer"
        assert attributes["messaging.system"] == "kafka"
        assert attributes["messaging.destination.name"] == topics.engagement
        assert attributes["messaging.consumer.group.name"] == "otlp"
        assert "messaging.kafka.offset" in attributes
        if "POST" in by_name:  # a batch's delivery span sits under its first traced message
            with_post += 1
            post = by_name["POST"]
            assert post["references"][0]["spanID"] == process["spanID"]
            post_attributes = tags(post)
            assert post_attributes["span.kind"] == "client"
            assert post_attributes["http.request.method"] == "POST"
            assert post_attributes["http.response.status_code"] == 200
            assert post_attributes["server.address"] == "127.0.0.1"
            assert post_attributes["pinterest.request_id"]
    assert with_post >= 1
    stored = json.dumps(traces)
    for secret in (MARKER_EMAIL, "pii-marker", TOKEN):
        assert secret not in stored and secret not in log


def test_otlp_traces_endpoint_and_headers_reach_the_receiver(
    kafka: KafkaBroker,
    registry: SchemaRegistry,
    sandbox: SandboxProcess,
    topics: Topics,
    jaeger: JaegerServer,
    tmp_path: Path,
) -> None:
    proxy = RecordingProxy(jaeger.otlp_endpoint)
    try:
        trace_ids = produce_traced(kafka, registry, topics, jaeger, 3)
        log = run_consumer(
            tmp_path, kafka, topics, registry, sandbox, "otlp-headers", 3,
            # the per-signal variable is used as given: no /v1/traces appended
            OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=f"{proxy.url}/v1/traces",
            OTEL_EXPORTER_OTLP_HEADERS=f"authorization=Bearer {OTLP_TOKEN},x-tenant=shop",
        )  # fmt: skip
    finally:
        proxy.stop()
    assert proxy.headers, "no OTLP request reached the receiver"
    assert all(h.get("authorization") == f"Bearer {OTLP_TOKEN}" for h in proxy.headers)
    assert all(h.get("x-tenant") == "shop" for h in proxy.headers)
    assert all(h.get("content-type") == "application/x-protobuf" for h in proxy.headers)
    traces = wait_for_traces(jaeger, trace_ids)
    assert all(any(s["operationName"].startswith("process ") for s in t) for t in traces)
    assert OTLP_TOKEN not in log


def span_counters(metrics_text: str) -> dict[str, float]:
    """The SDK's own counters: spans handed to the exporter, dropped at the full queue, lost in
    failed exports, and the queue now."""
    out = dict.fromkeys(("exported", "dropped", "export_failed", "queue"), 0.0)
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            failed = bool(sample.labels.get("error_type"))
            if sample.name == "otel_sdk_processor_span_processed_total":
                out["dropped" if failed else "exported"] += sample.value
            elif sample.name == "otel_sdk_exporter_span_exported_total" and failed:
                out["export_failed"] += sample.value
            elif sample.name == "otel_sdk_processor_span_queue_size":
                out["queue"] += sample.value
    return out


def produce_untraced_spans(
    kafka: KafkaBroker, registry: SchemaRegistry, topics: Topics, count: int, seed: int
) -> None:
    """Engagement events, each with a sampled traceparent: one process span per message."""
    schema_id = register(registry.url, f"{topics.engagement}-value", "engagement_event.v1.avsc")
    schema = load_schema("engagement_event.v1.avsc")
    producer = shared_producer(kafka.bootstrap)
    rng = random.Random(seed)
    now_ms = int(time.time() * 1000)
    for n in range(count):
        traceparent = f"00-{rng.getrandbits(128):032x}-{rng.getrandbits(64):016x}-01"
        producer.produce(
            topics.engagement,
            value=wire_encode(schema_id, schema, engagement_record(rng, n, now_ms)),
            headers=[("traceparent", traceparent.encode())],
        )
        producer.poll(0)
    assert producer.flush(30) == 0


def delivery_rate(consumer: ConsumerProcess, start: int, end: int) -> float:
    """Deliveries per second while the delivered count goes from `start` to `end`."""
    consumer.wait_for(lambda s: s["delivered"] >= start, 90, f"{start} deliveries")
    started = time.monotonic()
    consumer.wait_for(lambda s: s["delivered"] >= end, 90, f"{end} deliveries")
    return (end - start) / (time.monotonic() - started)


@pytest.mark.parametrize("receiver", ["down", "slow"])
def test_otlp_receiver_down_or_slow_never_slows_consumption(
    kafka: KafkaBroker,
    registry: SchemaRegistry,
    sandbox: SandboxProcess,
    topics: Topics,
    tmp_path: Path,
    receiver: str,
) -> None:
    jaeger = JaegerServer().start()
    proxy = RecordingProxy(jaeger.otlp_endpoint)  # "slow": it stops answering mid-run
    endpoint = jaeger.otlp_endpoint if receiver == "down" else proxy.url
    produce_untraced_spans(kafka, registry, topics, 2500, seed=8)
    sandbox.faults(latency_ms=40)  # the sink sets the pace, so the two rates compare
    consumer = ConsumerProcess(
        tmp_path, kafka, topics, registry.url, sandbox.url, f"otlp-{receiver}",
        CAPI_BATCH_MAX_EVENTS="100", CAPI_MAX_IN_FLIGHT_PER_ACCOUNT="1",
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, OTEL_BSP_SCHEDULE_DELAY="200",
        OTEL_EXPORTER_OTLP_TIMEOUT="5",
    ).start()  # fmt: skip
    try:
        assert consumer.server is not None
        rate_before = delivery_rate(consumer, 500, 2000)
        assert span_counters(consumer.get("/metrics")[1])["exported"] > 0
        if receiver == "down":
            jaeger.stop()
        else:
            proxy.hang()
        produce_untraced_spans(kafka, registry, topics, 5000, seed=9)  # spans made from now on
        rate_after = delivery_rate(consumer, 3000, 6000)
        consumer.wait_final(7500, 120)
        # Buffers have reached their working size by now: more traffic, with every span still
        # undeliverable, must not grow memory.
        rss_start = rss_mb(consumer.server.proc.pid)
        produce_untraced_spans(kafka, registry, topics, 5000, seed=10)
        consumer.wait_final(12500, 120)
        rss_end = rss_mb(consumer.server.proc.pid)
        deadline = time.monotonic() + 60  # failed exports are counted once they time out
        spans = span_counters(consumer.get("/metrics")[1])
        while spans["dropped"] + spans["export_failed"] == 0 and time.monotonic() < deadline:
            time.sleep(0.5)
            spans = span_counters(consumer.get("/metrics")[1])
        print(
            f"\nOTLP receiver {receiver}: delivered/s {rate_before:.0f} before, "
            f"{rate_after:.0f} after; RSS {rss_start:.1f} → {rss_end:.1f} MB; spans {spans}"
        )
        assert rate_after > 0.5 * rate_before, "consumption slowed down with the receiver"
        # Spans that cannot reach the receiver are dropped, and counted where they were lost.
        assert spans["dropped"] + spans["export_failed"] > 0
        assert spans["queue"] <= 2048
        assert rss_end - rss_start < 15, "memory grew while the receiver was unreachable"
        assert consumer.terminate() == 0  # shutdown gives up on the receiver in bounded time
    finally:
        consumer.stop()
        proxy.stop()
        jaeger.cleanup()
