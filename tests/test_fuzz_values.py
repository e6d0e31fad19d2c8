"""Fuzz at the value level (issue 24 part 3): any value in any field the mapping reads.

A mapping that reads every user_data, custom_data and top-level field from a record whose
fields may hold anything a decoder can hand over (text, 64-bit and wider integers, floats with
NaN and infinities, Decimals with any exponent, bytes, booleans, arrays, maps, nulls). Each
record goes through the real build path and the batcher's encoding; the only outcomes allowed
are an event the full schema check accepts in the request body, a skip, or a dead-letter reason.
"""

from __future__ import annotations

import io
from collections import Counter
from decimal import Decimal
from typing import Any

import fastavro
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.conversion.capi import validate_event
from consumer.conversion.rules import compile_mapping
from consumer.conversion.userdata import USER_FIELDS
from consumer.engine.process import RecordProcessor, encode_event
from consumer.errors import PermanentError
from consumer.records import Conversion, Coordinates, Decoded, Envelope, Skip, request_body
from consumer.stages.batcher import Batcher, BatchSettings
from consumer.stages.decode import Decoder

NOW_S = 1_800_000_000
TOPIC = "loose"
CUSTOM = ["value", "currency", "num_items", "content_ids", "order_id", "search_string",
          "content_name", "content_category", "content_brand", "predicted_ltv"]  # fmt: skip
CONTENT = ["id", "item_price", "quantity", "item_name", "item_category", "item_brand"]
TOP = ["event_source_url", "language", "app_id", "app_name", "app_version", "device_brand",
       "device_carrier", "device_model", "device_type", "os_version"]  # fmt: skip
USER = sorted(USER_FIELDS)
FIELDS = ["name", "source", "account", "id", "time", *USER, *CUSTOM, *TOP, "items"]
MAPPING = compile_mapping(
    {
        "topics": [
            {
                "topic": TOPIC,
                "event_name": {"field": "name"},
                "action_source": {"field": "source"},
                "ad_account": {"field": "account"},
                "event_id": "{id}",
                "event_time": "time",
                "user_data": {f: f"u_{f}" for f in USER},
                "custom_data": {
                    **{f: f"c_{f}" for f in CUSTOM},
                    "contents": {"each": "items", "fields": {f: f for f in CONTENT}},
                },
                "fields": {f: f"t_{f}" for f in TOP},
            }
        ]
    }
)
RECORD_KEYS = ["name", "source", "account", "id", "time", "items",
               *(f"u_{f}" for f in USER), *(f"c_{f}" for f in CUSTOM),
               *(f"t_{f}" for f in TOP)]  # fmt: skip

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.text(max_size=12),
    st.sampled_from(["", " ", "²", "٣", "1e999999999", "1e400", "NaN", "-0", "x" * 20_000]),
    st.integers(),  # wider than 64 bits too
    st.sampled_from([10**25, -(2**63) - 1, 2**63]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.sampled_from(
        [Decimal("1e999999999"), Decimal("-1e-999999999"), Decimal("0E-999999999"), Decimal("sNaN")]
    ),
    st.binary(max_size=12),
    st.sampled_from([b"\xc3(\xa0", b"ord-1"]),
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=4),
    st.dictionaries(st.text(max_size=4), scalars, max_size=3),
    st.just(["a"] * 1_500),
)
# Values that let a record reach the deeper stages often enough.
GOOD = {
    "name": st.sampled_from(["checkout", "lead", "checkout", "purchase"]),
    "source": st.sampled_from(["web", "offline", "web", "shop"]),
    "account": st.sampled_from(["549755885175", "549755885175", 549755885175, "²"]),
    "id": st.sampled_from(["ord-1", "ord-2"]),
    "time": st.sampled_from([NOW_S - 60, (NOW_S - 60) * 1000]),
    "u_em": st.sampled_from(["Ann@Example.com", "a@b.co"]),
    "items": st.lists(st.fixed_dictionaries({}, optional={f: values for f in CONTENT}), max_size=3),
}


@st.composite
def records(draw: Any) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for key in RECORD_KEYS:
        if key in GOOD and draw(st.integers(0, 9)):
            record[key] = draw(GOOD[key])
        elif draw(st.integers(0, 2)) == 0:
            record[key] = draw(values)
    return record


FUZZ = settings(
    max_examples=700,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


OUTCOMES: Counter[str] = Counter()  # what the inputs became (`pytest -s` prints it)


def check_outcome(processor: RecordProcessor, result: object) -> None:
    """An event whose request body the closed-schema check accepts, a skip, or a reason."""
    OUTCOMES[
        type(result).__name__ if not isinstance(result, PermanentError) else result.reason
    ] += 1
    if isinstance(result, PermanentError):
        assert result.reason.count(".") == 1 and " " not in result.reason
        return
    assert isinstance(result, Conversion | Skip), type(result)
    if isinstance(result, Skip):
        return
    batches: list[Any] = []
    batcher = Batcher(batches.append, BatchSettings(max_events=1))
    batcher.submit(result)
    (batch,) = batches
    body = orjson.loads(request_body(batch.encoded))
    assert len(batch.encoded[0]) < 200_000  # bounded: no value may grow an event without end
    for event in body["data"]:
        validate_event(event, NOW_S, processor.mapping.max_future_skew_s)


@FUZZ
@given(records())
def test_any_value_in_any_field_builds_a_valid_event_or_a_reason(record: dict[str, Any]) -> None:
    processor = RecordProcessor(MAPPING, check_every=10**9)
    envelope = Envelope(Coordinates(TOPIC, 0, 0), value=b"")
    try:
        result: object = processor.build_decoded(Decoded(envelope, record, "Loose"), NOW_S)
        if isinstance(result, Conversion):
            result.encoded = encode_event(result.event)
    except PermanentError as exc:
        result = exc
    check_outcome(processor, result)


# The same through Avro: each field a union of every type a schema may give it.
def loose_schema() -> dict[str, Any]:
    kind: dict[str, Any] = {
        "type": "enum",
        "name": "Kind",
        "symbols": ["checkout", "lead", "web", "OTHER"],
    }
    fields: list[dict[str, Any]] = []
    for i, key in enumerate(k for k in RECORD_KEYS if k != "items"):
        fields.append({"name": key, "type": [
            "null", "string", "long", "double", "boolean", "bytes",
            kind if i == 0 else "Kind",  # a named type is defined once, then referenced
            {"type": "array", "items": ["null", "string", "long", "double", "bytes"]},
            {"type": "map", "values": ["null", "string", "long", "double"]},
        ]})  # fmt: skip
    items: dict[str, Any] = {"type": "map", "values": ["null", "string", "long", "double", "bytes"]}
    fields.append({"name": "items", "type": {"type": "array", "items": items}})
    return {"type": "record", "name": "Loose", "fields": fields}


LOOSE_SCHEMA = loose_schema()
PARSED_LOOSE_SCHEMA = fastavro.parse_schema(LOOSE_SCHEMA)
avro_items = st.one_of(  # what arrays and maps of the loose schema hold
    st.none(),
    st.text(max_size=12),
    st.sampled_from(["²", "1e999999999", "x" * 20_000, "checkout", "549755885175"]),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.binary(max_size=12),
)
avro_scalars = st.one_of(avro_items, st.booleans())


@st.composite
def avro_records(draw: Any) -> dict[str, Any]:
    record = draw(records())
    out: dict[str, Any] = {}
    for key in RECORD_KEYS:
        if key == "items":
            out[key] = draw(
                st.lists(st.dictionaries(st.sampled_from(CONTENT), avro_items), max_size=3)
            )
        elif key in record and _encodable(record[key]):
            out[key] = record[key]
        else:
            out[key] = draw(st.one_of(avro_scalars, st.lists(avro_items, max_size=3)))
    return out


def _encodable(value: object) -> bool:
    if isinstance(value, dict):
        return False
    if isinstance(value, list):
        return all(_encodable(v) for v in value) and all(not isinstance(v, bool) for v in value)
    if isinstance(value, int) and not isinstance(value, bool):
        return -(2**63) <= value < 2**63
    return value is None or isinstance(value, str | float | bytes | bool)


@FUZZ
@given(avro_records())
def test_any_avro_value_through_decode_builds_a_valid_event_or_a_reason(
    record: dict[str, Any],
) -> None:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, PARSED_LOOSE_SCHEMA, record)
    processor = RecordProcessor(MAPPING, check_every=10**9)
    processor.decoder = Decoder(None, {TOPIC: LOOSE_SCHEMA}, {})
    envelope = Envelope(Coordinates(TOPIC, 0, 0), buffer.getvalue())  # a local schema: no header
    check_outcome(processor, processor.build(envelope, NOW_S))


def test_the_fuzz_reached_every_outcome() -> None:
    """Runs after the two above: many inputs became events, others reasons (not all one)."""
    print(f"value fuzz outcomes: {dict(OUTCOMES.most_common())}")
    if sum(OUTCOMES.values()) >= 1000:  # only when the fuzz tests ran in this process
        assert OUTCOMES["Conversion"] >= 100
