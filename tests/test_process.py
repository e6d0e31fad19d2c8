from __future__ import annotations

import dataclasses
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from consumer.conversion.capi import validate_event
from consumer.conversion.rules import MappingRules, compile_mapping
from consumer.engine.process import _PROPAGATOR, RecordProcessor, encode_event, remote_context
from consumer.errors import PermanentError, TransientError
from consumer.records import Conversion, Coordinates, Decoded, Envelope
from consumer.stages.decode import Decoder
from tests.conftest import placed_order

ROOT = Path(__file__).resolve().parent.parent
ORDER = "com.example.shop.orders.OrderEvent"
NOW_S = 1_800_000_000
MAPPING = compile_mapping(yaml.safe_load((ROOT / "schemas" / "mapping.example.yaml").read_text()))


def order(**changes: Any) -> dict[str, Any]:
    return placed_order(NOW_S, **changes)


def decoded(record: dict[str, Any], offset: int = 0) -> Decoded:
    return Decoded(Envelope(Coordinates("shop.orders", 0, offset), value=b""), record, ORDER)


def processor(mapping: MappingRules = MAPPING, check_every: int = 1) -> RecordProcessor:
    return RecordProcessor(mapping, check_every=check_every)


def test_run_checks_the_first_event_then_one_in_check_every() -> None:
    sampled = processor(check_every=10)
    for offset in range(25):
        assert isinstance(sampled.build_decoded(decoded(order(), offset), NOW_S), Conversion)
    assert sampled.checked == {"valid": 3}  # offsets 0, 10 and 20


def test_transform_checks_every_event() -> None:
    every = processor()
    for offset in range(5):
        every.build_decoded(decoded(order(), offset), NOW_S)
    assert every.checked == {"valid": 5}


def test_an_event_without_an_accepted_identifier_is_refused_even_unchecked() -> None:
    record = order()
    record["customer"] = {**record["customer"], "email": None}
    record["context"] = {**record["context"], "ip_address": None}
    with pytest.raises(PermanentError) as refused:
        processor(check_every=10**9).build_decoded(decoded(record, 1), NOW_S)
    assert refused.value.reason == "validate.invalid_event"


foreign = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63),
    st.floats(),
    st.decimals(allow_nan=False, allow_infinity=False, places=2),
    st.text(max_size=30),
    st.lists(st.one_of(st.none(), st.text(max_size=10), st.integers()), max_size=3),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
)
PATHS = [
    ("customer", "email"),
    ("customer", "phone"),
    ("customer", "gender"),
    ("customer", "date_of_birth"),
    ("customer", "customer_id"),
    ("context", "ip_address"),
    ("context", "user_agent"),
    ("context", "page_url"),
    ("context", "language"),
    ("context", "epik"),
    ("total",),
    ("currency",),
    ("order_id",),
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(PATHS), foreign), min_size=1, max_size=6), st.data())
def test_whatever_a_record_holds_an_event_built_from_it_is_valid(
    changes: list[tuple[tuple[str, ...], Any]], data: st.DataObject
) -> None:
    """The full check is sampled in `run`: builders must not be able to produce invalid events."""
    record = order()
    record["customer"], record["context"] = dict(record["customer"]), dict(record["context"])
    for path, value in changes:
        target = record
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value
    if data.draw(st.booleans()):
        record["items"] = [
            {**item, "quantity": data.draw(foreign), "unit_price": data.draw(foreign)}
            for item in record["items"]
        ]
    unchecked = processor(check_every=10**9)
    unchecked.build_decoded(decoded(order(), 0), NOW_S)  # spends the first, always-checked event
    try:
        built = unchecked.build_decoded(decoded(record, 1), NOW_S)
    except PermanentError:
        return
    if isinstance(built, Conversion):
        validate_event(built.event, NOW_S, MAPPING.max_future_skew_s)


def test_decimal_and_float_totals_become_decimal_strings() -> None:
    for total in (Decimal("72.39"), 72.39, 72):
        built = processor().build_decoded(decoded(order(total=total)), NOW_S)
        assert isinstance(built, Conversion)
        assert built.event["custom_data"]["value"] in ("72.39", "72")


class RecordDecoder(Decoder):
    """Hands back a prepared record, or raises what the test wants raised while decoding."""

    def __init__(self, record: dict[str, Any] | None = None, error: Exception | None = None):
        super().__init__(None, {}, {})
        self.record, self.error = record, error

    def decode(self, envelope: Envelope) -> Decoded:
        if self.error is not None:
            raise self.error
        assert self.record is not None
        return Decoded(envelope, self.record, ORDER)


def envelope(offset: int = 0) -> Envelope:
    return Envelope(Coordinates("shop.orders", 0, offset), value=b"")


def test_build_an_unexpected_exception_is_the_records_failure_logged_once_per_kind(
    caplog: pytest.LogCaptureFixture,
) -> None:
    built = processor()
    built.decoder = RecordDecoder(error=ValueError("invalid literal for int(): '²'"))
    first, second = built.build(envelope(0), NOW_S), built.build(envelope(1), NOW_S)
    assert isinstance(first, PermanentError) and isinstance(second, PermanentError)
    assert first.reason == "internal.ValueError" and "²" in first.detail  # the dead letter's
    assert built.internal_errors == {"ValueError": 2}
    logged = [r for r in caplog.records if "failed to build" in r.getMessage()]
    assert len(logged) == 1 and "²" not in str(logged[0].__dict__)  # never the value


def test_build_a_transient_error_is_not_the_records_failure() -> None:
    built = processor()
    built.decoder = RecordDecoder(error=TransientError("registry away"))
    with pytest.raises(TransientError):
        built.build(envelope(), NOW_S)


def test_build_encodes_the_event_and_refuses_an_integer_json_cannot_carry() -> None:
    built = processor()
    built.decoder = RecordDecoder(order())
    conversion = built.build(envelope(), NOW_S)
    assert isinstance(conversion, Conversion)
    assert orjson.loads(conversion.encoded) == conversion.event
    with pytest.raises(PermanentError) as refused:
        encode_event({"custom_data": {"num_items": 10**25}})
    assert refused.value.reason == "encode.unencodable"


TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_a_traced_record_has_a_span_of_its_own_when_spans_are_recorded() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    built = RecordProcessor(MAPPING, tracer=provider.get_tracer("t"), check_every=1)
    built.decoder = RecordDecoder(order())
    traced = dataclasses.replace(envelope(), traceparent=TRACEPARENT)
    conversion = built.build(traced, NOW_S)
    assert isinstance(conversion, Conversion)
    (span,) = exporter.get_finished_spans()
    assert conversion.span_context == span.get_span_context()
    assert span.parent is not None and span.parent.span_id == 0xB7AD6B7169203331


def test_a_traced_record_keeps_its_producers_context_when_no_span_is_recorded() -> None:
    """Tracing off: no span per record (15 µs each for nothing), but the producer's trace id
    still reaches the delivery span, and the logs written under it."""
    tracer = TracerProvider(sampler=ALWAYS_OFF).get_tracer("t")
    built = RecordProcessor(MAPPING, tracer=tracer, check_every=1, records_spans=False)
    built.decoder = RecordDecoder(order())
    built._start_span = None  # type: ignore[assignment, method-assign]  # never called
    conversion = built.build(dataclasses.replace(envelope(), traceparent=TRACEPARENT), NOW_S)
    assert isinstance(conversion, Conversion)
    assert isinstance(conversion.span_context, trace.SpanContext)
    assert conversion.span_context.trace_id == 0x0AF7651916CD43DD8448EB211C80319C
    assert conversion.span_context.span_id == 0xB7AD6B7169203331
    bad = built.build(dataclasses.replace(envelope(1), traceparent="00-zz-zz-01"), NOW_S)
    assert isinstance(bad, Conversion) and bad.span_context is None


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(
        st.from_regex(
            r"[ \t]?(00|01|ff|0g)-([0-9a-f]{32}|0{32})-([0-9a-f]{16}|0{16})-[0-9a-f]{2}(-x)?[ \t]?",
            fullmatch=True,
        ),
        st.text(max_size=60),
        st.sampled_from([TRACEPARENT + "\n", " " + TRACEPARENT + "\t", TRACEPARENT + "-\n"]),
    )
)
def test_traceparent_is_read_as_the_propagator_reads_it(traceparent: str) -> None:
    carried = trace.get_current_span(_PROPAGATOR.extract({"traceparent": traceparent}))
    expected = carried.get_span_context()
    assert remote_context(traceparent) == (expected if expected.is_valid else None)
