from __future__ import annotations

import logging

import orjson
from opentelemetry.sdk.trace import TracerProvider

from consumer.observability.logs import JsonFormatter, RepeatFilter


def record(msg: str, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("consumer.test", logging.WARNING, __file__, 1, msg, (), None)
    for key, value in extra.items():
        setattr(made, key, value)
    return made


def test_json_formatter_fields_extras_and_trace_ids() -> None:
    tracer = TracerProvider().get_tracer("t")
    with tracer.start_as_current_span("s") as span:
        line = JsonFormatter().format(record("delivery failed", status=429, ad_account="1"))
    entry = orjson.loads(line)
    assert entry["msg"] == "delivery failed" and entry["level"] == "warning"
    assert entry["status"] == 429 and entry["ad_account"] == "1"
    assert entry["trace_id"] == format(span.get_span_context().trace_id, "032x")


def test_repeat_filter_lets_one_of_a_kind_through_per_interval() -> None:
    repeat = RepeatFilter(interval_s=60)
    first = record("FAIL 127.0.0.1:1234 connection refused")
    again = record("FAIL 127.0.0.1:1234 connection refused")
    other = record("GETPID something else")
    assert repeat.filter(first) and not repeat.filter(again) and repeat.filter(other)
