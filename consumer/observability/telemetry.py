"""OpenTelemetry set-up and every span name, attribute key and metric name, in one place.

Traces and metrics follow the messaging and HTTP semantic conventions; no attribute ever holds
PII or a token. Exporters come from the standard OTEL_* variables and are off when unset.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

logger = logging.getLogger(__name__)
# How long the exit waits for exporters to flush: with a receiver that hangs, each queued batch
# waits OTEL_EXPORTER_OTLP_TIMEOUT in turn (30 s and more were seen), past the pod's grace.
SHUTDOWN_TIMEOUT_S: Final = 5.0

SERVICE_NAME: Final = "capi-consumer"
INSTRUMENTATION: Final = "consumer"

# Span names.
SPAN_PROCESS: Final = "process {topic}"  # messaging: one consumed message with a traceparent
SPAN_PROCESS_CHUNK: Final = "process"  # messaging: one consumed chunk of messages
SPAN_DELIVER: Final = "POST"  # HTTP client: one request to the events endpoint
SPAN_DEAD_LETTER: Final = "send {topic}"  # messaging: one dead-letter write

# Attribute keys (semantic conventions first, then ours under pinterest.* / capi.*).
ATTR_MESSAGING_SYSTEM: Final = "messaging.system"
ATTR_MESSAGING_OPERATION: Final = "messaging.operation.type"
ATTR_DESTINATION: Final = "messaging.destination.name"
ATTR_PARTITION: Final = "messaging.destination.partition.id"
ATTR_OFFSET: Final = "messaging.kafka.offset"
ATTR_CONSUMER_GROUP: Final = "messaging.consumer.group.name"
ATTR_BATCH_COUNT: Final = "messaging.batch.message_count"
ATTR_HTTP_METHOD: Final = "http.request.method"
ATTR_HTTP_STATUS: Final = "http.response.status_code"
ATTR_HTTP_RESEND: Final = "http.request.resend_count"
ATTR_URL: Final = "url.full"
ATTR_SERVER: Final = "server.address"
ATTR_SERVER_PORT: Final = "server.port"
ATTR_ERROR_TYPE: Final = "error.type"
ATTR_AD_ACCOUNT: Final = "pinterest.ad_account_id"
ATTR_BATCH_SIZE: Final = "pinterest.batch.size"
ATTR_PROCESSED: Final = "pinterest.events.processed"
ATTR_FAILED: Final = "pinterest.events.failed"
ATTR_REQUEST_ID: Final = "pinterest.request_id"
ATTR_REASON: Final = "capi.reason"

# Metric names (Prometheus shows dots as underscores and adds _total to counters); HELP
# holds what each one counts, and is what Prometheus shows as its # HELP line.
M_CONSUMED: Final = "capi.messages.consumed"
M_SKIPPED: Final = "capi.messages.skipped"
M_DEDUPLICATED: Final = "capi.events.deduplicated"
M_DELIVERED: Final = "capi.events.delivered"
M_FAILED: Final = "capi.events.failed"
M_DEAD_LETTERED: Final = "capi.messages.dead_lettered"
M_WARNINGS: Final = "capi.events.warnings"
M_REQUESTS: Final = "capi.delivery.requests"
M_RETRIES: Final = "capi.delivery.retries"
M_BATCH_SIZE: Final = "capi.delivery.batch.size"
M_EVENT_TO_ACK: Final = "capi.delivery.event_to_ack.duration"
M_CONSUME_TO_ACK: Final = "capi.delivery.consume_to_ack.duration"
M_IN_FLIGHT: Final = "capi.events.in_flight"
M_PAUSED: Final = "capi.consumer.paused_partitions"
M_LAG: Final = "capi.consumer.lag"
M_HALTED: Final = "capi.delivery.halted_accounts"
M_READY: Final = "capi.consumer.ready"
M_STATE: Final = "capi.consumer.state"
M_COMMITTED: Final = "capi.consumer.committed_offsets"
M_OFFSET_MAP_REFUSED: Final = "capi.offset_map.refused"
M_MATCH_EVENTS: Final = "capi.match.events"
M_MATCH_IDENTIFIER: Final = "capi.match.identifier.events"
M_MATCH_COUNT: Final = "capi.match.events_by_identifier_count"
M_EQS_STATUS: Final = "capi.pinterest.eqs.status"
M_EQS_COVERAGE: Final = "capi.pinterest.eqs.coverage"
M_NORMALIZE_DROPPED: Final = "capi.normalize.dropped"
M_OFFSET_MAP_OVERFLOW: Final = "capi.offset_map.overflow"
M_EVENTS_CHECKED: Final = "capi.events.checked"
# OpenTelemetry HTTP client semantic conventions (with http.request.method,
# http.response.status_code, server.address, server.port, error.type)
M_HTTP_CLIENT_DURATION: Final = "http.client.request.duration"

HELP: Final = {
    M_CONSUMED: "Messages read from Kafka, by topic.",
    M_SKIPPED: "Messages dropped on purpose (filter, consent, no rule, already final), by reason.",
    M_DEDUPLICATED: "Events dropped as duplicates of an event_id inside the window.",
    M_DELIVERED: "Events Pinterest answered processed, by ad account and event name.",
    M_FAILED: "Events that failed for good and go to the dead-letter topic, by reason.",
    M_DEAD_LETTERED: "Dead-letter writes Kafka acknowledged, by reason.",
    M_WARNINGS: "Events processed with a warning_message, by ad account.",
    M_REQUESTS: "HTTP requests to the events endpoint, by status code (0: no answer).",
    M_RETRIES: "Requests retried, by cause.",
    M_BATCH_SIZE: "Events per request.",
    M_EVENT_TO_ACK: "Seconds from the oldest event_time in a request to Pinterest's answer.",
    M_CONSUME_TO_ACK: "Seconds from consuming the oldest delivered message of a request to "
    "Pinterest's answer (one measurement per request).",
    M_IN_FLIGHT: "Messages consumed whose fate is not final yet.",
    M_PAUSED: "Partitions paused by backpressure.",
    M_LAG: "Messages behind the high watermark, per partition.",
    M_HALTED: "Ad accounts halted (401, 403, 404 or an answer that is not the API's).",
    M_READY: "1 when /readyz answers 200, else 0.",
    M_STATE: "1 for the readiness state /readyz reports (one series per state), else 0.",
    M_COMMITTED: "Partition offsets committed.",
    M_OFFSET_MAP_REFUSED: "Commits the broker refused for the size of their metadata (its "
    "offset.metadata.max.bytes); the map of final offsets was halved each time.",
    M_MATCH_EVENTS: "Events built, by ad account and event name.",
    M_MATCH_IDENTIFIER: "Events carrying each match identifier, by ad account and event name.",
    M_MATCH_COUNT: "Events by how many match identifiers they carry.",
    M_EQS_STATUS: "Pinterest's event quality score per ad account, source platform and "
    "ingestion source: 1 for the current overall status (NEEDS_IMPROVEMENT, FAIR, GOOD).",
    M_EQS_COVERAGE: "Pinterest's coverage of each quality component (identifier) per event "
    "type, as a ratio, from the event quality score.",
    M_NORMALIZE_DROPPED: "Values left out of an event (user_data, custom_data, top-level "
    "fields), by field and reason (the event was still sent).",
    M_OFFSET_MAP_OVERFLOW: "Commits whose map of final offsets past the prefix did not fit the "
    "metadata limit whole.",
    M_EVENTS_CHECKED: "Built events checked against the API's full event schema (every one in "
    "consumer transform, one in 1,000 in consumer run), by result.",
    M_HTTP_CLIENT_DURATION: "Seconds per request to the events endpoint (OpenTelemetry HTTP "
    "client conventions).",
}


@dataclass(slots=True)
class Instruments:
    consumed: metrics.Counter
    skipped: metrics.Counter
    deduplicated: metrics.Counter
    delivered: metrics.Counter
    failed: metrics.Counter
    dead_lettered: metrics.Counter
    warnings: metrics.Counter
    requests: metrics.Counter
    retries: metrics.Counter
    committed: metrics.Counter
    offset_map_refused: metrics.Counter
    batch_size: metrics.Histogram
    event_to_ack_s: metrics.Histogram
    consume_to_ack_s: metrics.Histogram
    http_client_duration_s: metrics.Histogram


Gauges = Callable[[], Iterable[tuple[str, float, dict[str, str]]]]


class Telemetry:
    """Tracer, meter and instruments; `gauges` is polled at export time for the observables."""

    def __init__(
        self,
        tracer_provider: trace.TracerProvider,
        meter_provider: metrics.MeterProvider,
        records_spans: bool = True,
    ) -> None:
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.tracer = tracer_provider.get_tracer(INSTRUMENTATION)
        # False when no span can ever be recorded (nothing to export, no sampler asked for):
        # a span per traced record would then cost 15 µs for nothing.
        self.records_spans = records_spans
        meter = meter_provider.get_meter(INSTRUMENTATION)
        self.meter = meter
        self._gauge_sources: list[Gauges] = []
        latency_buckets = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 86400]
        self.instruments = Instruments(
            consumed=meter.create_counter(M_CONSUMED, "{message}", HELP[M_CONSUMED]),
            skipped=meter.create_counter(M_SKIPPED, "{message}", HELP[M_SKIPPED]),
            deduplicated=meter.create_counter(M_DEDUPLICATED, "{event}", HELP[M_DEDUPLICATED]),
            delivered=meter.create_counter(M_DELIVERED, "{event}", HELP[M_DELIVERED]),
            failed=meter.create_counter(M_FAILED, "{event}", HELP[M_FAILED]),
            dead_lettered=meter.create_counter(M_DEAD_LETTERED, "{message}", HELP[M_DEAD_LETTERED]),
            warnings=meter.create_counter(M_WARNINGS, "{event}", HELP[M_WARNINGS]),
            requests=meter.create_counter(M_REQUESTS, "{request}", HELP[M_REQUESTS]),
            retries=meter.create_counter(M_RETRIES, "{request}", HELP[M_RETRIES]),
            committed=meter.create_counter(M_COMMITTED, "{offset}", HELP[M_COMMITTED]),
            offset_map_refused=meter.create_counter(
                M_OFFSET_MAP_REFUSED, "{commit}", HELP[M_OFFSET_MAP_REFUSED]
            ),
            batch_size=meter.create_histogram(
                M_BATCH_SIZE,
                "{event}",
                HELP[M_BATCH_SIZE],
                explicit_bucket_boundaries_advisory=[1, 10, 50, 100, 250, 500, 750, 1000],
            ),
            event_to_ack_s=meter.create_histogram(
                M_EVENT_TO_ACK,
                "s",
                HELP[M_EVENT_TO_ACK],
                explicit_bucket_boundaries_advisory=latency_buckets,
            ),
            consume_to_ack_s=meter.create_histogram(
                M_CONSUME_TO_ACK,
                "s",
                HELP[M_CONSUME_TO_ACK],
                explicit_bucket_boundaries_advisory=latency_buckets,
            ),
            http_client_duration_s=meter.create_histogram(
                M_HTTP_CLIENT_DURATION,
                "s",
                HELP[M_HTTP_CLIENT_DURATION],
                # the buckets the semantic conventions recommend for HTTP durations
                explicit_bucket_boundaries_advisory=[
                    0.005,
                    0.01,
                    0.025,
                    0.05,
                    0.075,
                    0.1,
                    0.25,
                    0.5,
                    0.75,
                    1,
                    2.5,
                    5,
                    7.5,
                    10,
                ],
            ),
        )
        # Unlabelled zero series, so dashboards and alerts see 0 rather than "no data".
        for counter in (
            self.instruments.warnings,
            self.instruments.retries,
            self.instruments.failed,
            self.instruments.dead_lettered,
            self.instruments.deduplicated,
            self.instruments.skipped,
        ):
            counter.add(0)
        for name in (
            M_IN_FLIGHT, M_PAUSED, M_LAG, M_HALTED, M_READY, M_STATE, M_EQS_STATUS, M_EQS_COVERAGE
        ):  # fmt: skip
            meter.create_observable_gauge(
                name, callbacks=[self._observe(name)], description=HELP[name]
            )
        # Counted in plain Python per event and read at export time: an OTel add() per event
        # and identifier would cost more than the rest of the mapping.
        for name in (M_MATCH_EVENTS, M_MATCH_IDENTIFIER, M_MATCH_COUNT):
            meter.create_observable_counter(
                name, callbacks=[self._observe(name)], unit="{event}", description=HELP[name]
            )
        meter.create_observable_counter(
            M_NORMALIZE_DROPPED,
            callbacks=[self._observe(M_NORMALIZE_DROPPED)],
            unit="{value}",
            description=HELP[M_NORMALIZE_DROPPED],
        )
        meter.create_observable_counter(
            M_EVENTS_CHECKED,
            callbacks=[self._observe(M_EVENTS_CHECKED)],
            unit="{event}",
            description=HELP[M_EVENTS_CHECKED],
        )
        meter.create_observable_counter(
            M_OFFSET_MAP_OVERFLOW,
            callbacks=[self._observe(M_OFFSET_MAP_OVERFLOW)],
            unit="{commit}",
            description=HELP[M_OFFSET_MAP_OVERFLOW],
        )

    def add_gauges(self, source: Gauges) -> None:
        self._gauge_sources.append(source)

    def _observe(self, metric: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            for source in self._gauge_sources:
                for name, value, attributes in source():
                    if name == metric:
                        yield Observation(value, attributes)

        return observe

    def shutdown(self, timeout_s: float = SHUTDOWN_TIMEOUT_S) -> None:
        """Flush and stop the exporters, giving up after `timeout_s` (the providers are built
        without their own exit hook, which would wait again without a bound)."""
        done = threading.Event()

        def shut_down() -> None:
            for provider in (self.tracer_provider, self.meter_provider):
                shutdown = getattr(provider, "shutdown", None)
                if shutdown is not None:
                    shutdown()
            done.set()

        threading.Thread(target=shut_down, name="telemetry-shutdown", daemon=True).start()
        if not done.wait(timeout_s):
            logger.warning(
                "telemetry exporters did not flush in time; exiting without them",
                extra={"timeout_s": timeout_s},
            )


def _span_processors(meter_provider: metrics.MeterProvider | None = None) -> list[SpanProcessor]:
    """The exporter OTEL_TRACES_EXPORTER names, behind a bounded queue (OTEL_BSP_*): spans are
    dropped, never waited for, when the backend is slow or down. The processor reports its
    queue and drops (`otel_sdk_processor_span_processed_total{error_type="queue_full"}`) into
    `meter_provider`, the one /metrics shows."""
    choice = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    has_endpoint = bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )
    if choice == "none" or (choice == "otlp" and not has_endpoint):
        return []
    # On unless the operator says otherwise: the SDK then reports its queue, drops and export
    # failures (otel.sdk.processor.span.*, otel.sdk.exporter.span.*) through `meter_provider`.
    os.environ.setdefault("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "true")
    exporter: SpanExporter
    if choice == "console":
        exporter = ConsoleSpanExporter()
    elif choice == "zipkin":
        from opentelemetry.exporter.zipkin.json import ZipkinExporter

        exporter = ZipkinExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(meter_provider=meter_provider)
    return [BatchSpanProcessor(exporter, meter_provider=meter_provider)]


def _metric_readers(extra: list[MetricReader]) -> list[MetricReader]:
    readers = list(extra)
    choice = os.environ.get("OTEL_METRICS_EXPORTER", "otlp").strip().lower()
    has_endpoint = bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
    )
    if choice == "otlp" and has_endpoint:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
    return readers


def setup_telemetry(
    extra_readers: list[MetricReader] | None = None,
    span_processors: list[SpanProcessor] | None = None,
) -> Telemetry:
    """Providers from OTEL_* (service name, resource attributes, sampler, exporters)."""
    # OTEL_SERVICE_NAME, else service.name in OTEL_RESOURCE_ATTRIBUTES, else ours (the spec's
    # order; the SDK's own default would be "unknown_service").
    resource = Resource.create()
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": SERVICE_NAME}))
    meter_provider = MeterProvider(
        resource=resource,
        metric_readers=_metric_readers(extra_readers or []),
        shutdown_on_exit=False,  # Telemetry.shutdown bounds the wait instead
    )
    processors = _span_processors(meter_provider) if span_processors is None else span_processors
    # The sampler comes from OTEL_TRACES_SAMPLER; with nothing to export, recording spans would
    # only cost CPU, so they are not recorded (trace ids still reach the logs).
    sampler = ALWAYS_OFF if not processors and "OTEL_TRACES_SAMPLER" not in os.environ else None
    tracer_provider = TracerProvider(resource=resource, sampler=sampler, shutdown_on_exit=False)
    for processor in processors:
        tracer_provider.add_span_processor(processor)
    return Telemetry(tracer_provider, meter_provider, records_spans=sampler is not ALWAYS_OFF)
