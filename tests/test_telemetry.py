from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from consumer.observability import telemetry as tm
from consumer.records import AdAccountId, Batch, BatchResult, Secret
from consumer.stages.delivery import DeliveryClient, DeliverySettings
from consumer.tools.sandbox import Sandbox, serve
from devenv.procs import free_port
from tests.conftest import ConversionFactory


def metric_points(reader: InMemoryMetricReader) -> dict[str, list[tuple[dict[str, str], float]]]:
    points: dict[str, list[tuple[dict[str, str], float]]] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    value: Any = getattr(point, "value", None)
                    if value is None:
                        value = getattr(point, "count", 0)
                    points.setdefault(metric.name, []).append(
                        (
                            {str(k): str(v) for k, v in (point.attributes or {}).items()},
                            float(value),
                        )
                    )
    return points


def test_telemetry_counters_histograms_and_gauges() -> None:
    reader = InMemoryMetricReader()
    telemetry = tm.setup_telemetry([reader], span_processors=[])
    telemetry.add_gauges(
        lambda: [(tm.M_PAUSED, 3.0, {}), (tm.M_LAG, 7.0, {"topic": "t", "partition": "0"})]
    )
    telemetry.instruments.delivered.add(5, {"ad_account": "1", "event_name": "checkout"})
    telemetry.instruments.failed.add(1, {"reason": "pinterest.event_failed"})
    telemetry.instruments.batch_size.record(5)
    points = metric_points(reader)
    assert points[tm.M_DELIVERED] == [({"ad_account": "1", "event_name": "checkout"}, 5.0)]
    assert ({"reason": "pinterest.event_failed"}, 1.0) in points[tm.M_FAILED]
    assert ({}, 0.0) in points[tm.M_FAILED]  # the zero series dashboards rely on
    assert points[tm.M_BATCH_SIZE][0][1] == 1
    assert points[tm.M_PAUSED] == [({}, 3.0)]
    assert points[tm.M_LAG] == [({"topic": "t", "partition": "0"}, 7.0)]


def test_telemetry_exporters_off_without_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_TRACES_EXPORTER",
    ):
        monkeypatch.delenv(name, raising=False)
    assert tm._span_processors() == []
    assert not tm.setup_telemetry().records_spans  # nothing to export: no span per record
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    assert len(tm._span_processors()) == 1
    assert tm.setup_telemetry().records_spans


@pytest.fixture
async def sandbox_url() -> AsyncIterator[str]:
    port = free_port()
    runner = await serve(Sandbox({"tok": {"*"}}), "127.0.0.1", port)
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_delivery_span_http_conventions_links_and_no_pii(
    sandbox_url: str,
    conversion_factory: ConversionFactory,
) -> None:
    exporter = InMemorySpanExporter()
    telemetry = tm.setup_telemetry(span_processors=[SimpleSpanProcessor(exporter)])
    tracer = telemetry.tracer
    producer_spans = [tracer.start_span("send") for _ in range(2)]
    contexts = [span.get_span_context() for span in producer_spans]
    now = int(time.time()) - 10
    import dataclasses

    conversions = tuple(
        dataclasses.replace(
            conversion_factory(offset=i, ad_account="42", event_time_s=now),
            span_context=contexts[i] if i < 2 else None,
        )
        for i in range(3)
    )
    batch = Batch(AdAccountId("42"), conversions, tuple(orjson.dumps(c.event) for c in conversions))
    results: list[BatchResult] = []
    async with aiohttp.ClientSession() as session:
        client = DeliveryClient(
            session,
            DeliverySettings(sandbox_url),
            lambda a: Secret("tok"),
            results.append,
            telemetry,
        )
        client.submit(batch)
        assert await client.drain(time.monotonic() + 10)
    [span] = [s for s in exporter.get_finished_spans() if s.name == tm.SPAN_DELIVER]
    attributes = dict(span.attributes or {})
    assert span.kind == trace.SpanKind.CLIENT
    assert attributes[tm.ATTR_HTTP_METHOD] == "POST"
    assert attributes[tm.ATTR_HTTP_STATUS] == 200
    assert attributes[tm.ATTR_AD_ACCOUNT] == "42"
    assert attributes[tm.ATTR_BATCH_SIZE] == 3
    assert attributes[tm.ATTR_PROCESSED] == 3
    assert attributes[tm.ATTR_REQUEST_ID] == results[0].request_id
    assert [link.context for link in span.links] == contexts
    assert span.parent is not None and span.parent.span_id == contexts[0].span_id
    text = str(attributes)
    assert "tok" not in text.replace("token", "") and "@" not in text


def every_metric_page() -> str:
    """/metrics with every metric holding a value."""
    import dataclasses

    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    telemetry = tm.setup_telemetry([PrometheusMetricReader(registry=registry)], [])
    names = [v for k, v in vars(tm).items() if k.startswith("M_")]
    telemetry.add_gauges(lambda: [(name, 1.0, {}) for name in names])
    for field in dataclasses.fields(telemetry.instruments):
        instrument = getattr(telemetry.instruments, field.name)
        instrument.add(1) if hasattr(instrument, "add") else instrument.record(1)
    return str(generate_latest(registry).decode())


def test_every_capi_metric_has_help_text_on_metrics() -> None:
    names = [v for k, v in vars(tm).items() if k.startswith("M_")]
    assert set(tm.HELP) == set(names)  # every metric is described, and nothing else
    text = every_metric_page()
    prefixes = tuple("# HELP " + name.split(".")[0] + "_" for name in names)
    helps = {
        line.split()[2]: line.split(" ", 3)[3]
        for line in text.splitlines()
        if line.startswith(prefixes)
    }
    assert len(helps) == len(names), sorted(helps)
    for family, help_text in helps.items():
        assert help_text.endswith(".") and len(help_text) > 15, (family, help_text)


def test_readme_lists_every_metric() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for line in every_metric_page().splitlines():
        if line.startswith("# HELP ") and not line.startswith(("# HELP otel_", "# HELP target")):
            family = line.split()[2]
            assert f"`{family}`" in readme, f"README's metric table lacks {family}"
