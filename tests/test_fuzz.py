"""Fuzz the decode → map → normalize → validate path: it never raises anything but a
`PermanentError` (dead-letter with a reason), whatever the bytes."""

from __future__ import annotations

import math
import random
import struct
from io import BytesIO
from pathlib import Path
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.config import load_config
from consumer.conversion.capi import validate_event
from consumer.engine.process import RecordProcessor
from consumer.errors import PermanentError
from consumer.records import Conversion, Coordinates, Envelope, Skip
from consumer.stages.decode import Decoder, load_reader_schemas
from devenv.samples import engagement_record, load_schema, order_record

ROOT = Path(__file__).resolve().parent.parent
NOW_S = 1_800_000_000
ORDER_SCHEMA = load_schema("order_event.v1.avsc")
ENGAGEMENT_SCHEMA = load_schema("engagement_event.v1.avsc")


@pytest.fixture(scope="module")
def processor() -> RecordProcessor:
    config = load_config(
        {
            "CAPI_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
            "CAPI_MAPPING_FILE": str(ROOT / "schemas" / "mapping.example.yaml"),
            "CAPI_SCHEMA_REGISTRY_URL": "http://127.0.0.1:1",
            "CAPI_ACCESS_TOKEN": "t",
            "CAPI_HEALTH_PORT": "0",
        }
    )
    decoder = Decoder(None, {}, load_reader_schemas(ROOT / "schemas"))
    decoder.add_writer_schema(1, ORDER_SCHEMA)
    decoder.add_writer_schema(2, ENGAGEMENT_SCHEMA)
    # The full schema check off: what the builders produce must be valid by construction.
    return RecordProcessor(config.mapping, decoder, check_every=10**9)


def build(processor: RecordProcessor, topic: str, value: bytes) -> object:
    envelope = Envelope(Coordinates(topic, 0, 0), value=value)
    result = processor.build(envelope, NOW_S)
    assert isinstance(result, Conversion | Skip | PermanentError), type(result)
    if isinstance(result, Conversion):
        validate_event(result.event, NOW_S, processor.mapping.max_future_skew_s)
    if isinstance(result, PermanentError):
        assert result.reason.count(".") == 1 and " " not in result.reason
    return result


texts = st.one_of(
    st.text(max_size=50),
    st.sampled_from(
        ["", " ", "\x00", "\ud7ff", "😀" * 3, "a" * 100_000, "NaN", "1e309", "Ω≈ç√", "\u202e"]
    ),
)
numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.just(math.nan))


def random_record(draw: Any, schema: dict[str, Any]) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for field in schema["fields"]:
        record[field["name"]] = draw(value_for(field["type"]))
    return record


def value_for(avro_type: Any) -> st.SearchStrategy[Any]:
    if isinstance(avro_type, list):
        return st.one_of(*[value_for(t) for t in avro_type])
    if isinstance(avro_type, dict):
        kind = avro_type["type"]
        logical = avro_type.get("logicalType")
        if logical == "timestamp-millis":
            return st.integers(-(2**40), 2**42)
        if logical == "date":
            return st.integers(-(10**5), 10**5)
        if logical == "decimal":
            return st.decimals(
                allow_nan=False, allow_infinity=False, places=2, min_value=-(10**8), max_value=10**8
            )
        if kind == "record":
            return st.fixed_dictionaries(
                {f["name"]: value_for(f["type"]) for f in avro_type["fields"]}
            )
        if kind == "enum":
            return st.sampled_from(avro_type["symbols"])
        if kind == "array":
            return st.lists(value_for(avro_type["items"]), max_size=3)
        return value_for(kind)
    return {
        "null": st.none(),
        "string": texts,
        "boolean": st.booleans(),
        "int": st.integers(-(2**31), 2**31 - 1),
        "long": st.integers(-(2**63), 2**63 - 1),
        "double": numbers,
        "float": numbers,
        "bytes": st.binary(max_size=20),
    }[avro_type]


@st.composite
def wire_messages(draw: Any) -> tuple[str, bytes]:
    schema_id, schema, topic = draw(
        st.sampled_from(
            [(1, ORDER_SCHEMA, "shop.orders"), (2, ENGAGEMENT_SCHEMA, "shop.engagement")]
        )
    )
    if draw(st.booleans()):
        record = draw(value_for(schema))
    else:  # a valid record with a few fields replaced: reaches mapping and validation
        sample = order_record if schema is ORDER_SCHEMA else engagement_record
        record = sample(random.Random(draw(st.integers(0, 1000))), 1, 1_800_000_000_000 - 5000)
        record.update(
            event_type=record["event_type"] if schema is ENGAGEMENT_SCHEMA else "ORDER_PLACED",
            is_test=False,
        )
        if schema is ORDER_SCHEMA:
            record["consent"]["ads_personalization"] = True
        for field in draw(st.lists(st.sampled_from(schema["fields"]), max_size=3)):
            record[field["name"]] = draw(value_for(field["type"]))
    buffer = BytesIO()
    fastavro.schemaless_writer(buffer, schema, record)
    payload = struct.pack(">bI", 0, schema_id) + buffer.getvalue()
    mutation = draw(st.sampled_from(["none", "truncate", "magic", "unknown_id", "flip"]))
    if mutation == "truncate":
        payload = payload[: draw(st.integers(0, len(payload) - 1))]
    elif mutation == "magic":
        payload = b"\x07" + payload[1:]
    elif mutation == "unknown_id":
        payload = payload[:1] + struct.pack(">I", 4242) + payload[5:]
    elif mutation == "flip" and len(payload) > 6:
        at = draw(st.integers(5, len(payload) - 1))
        payload = payload[:at] + bytes([payload[at] ^ 0xFF]) + payload[at + 1 :]
    return topic, payload


FUZZ = settings(
    max_examples=600,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_random_bytes_never_crash(processor: RecordProcessor, raw: bytes) -> None:
    build(processor, "shop.orders", raw)
    build(processor, "shop.orders", b"\x00\x00\x00\x00\x01" + raw)


@FUZZ
@given(wire_messages())
def test_fuzz_schema_shaped_records_never_crash(
    processor: RecordProcessor, message: tuple[str, bytes]
) -> None:
    topic, payload = message
    build(processor, topic, payload)
