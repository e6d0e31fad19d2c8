"""The compiled decoder reads exactly what fastavro reads, or leaves the bytes to fastavro."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from io import BytesIO
from pathlib import Path
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.stages.avroplan import compiled_decoder, decoder_in_use, plan_for

# The compiled decoder is an accelerator: without the extension (no Rust where it was
# installed), or with CAPI_AVRO_DECODER=fastavro, fastavro decodes and these tests skip.
pytest.importorskip("capi_native")
if decoder_in_use() != "compiled":
    pytest.skip("CAPI_AVRO_DECODER=fastavro: the compiled decoder is off", allow_module_level=True)
from capi_native import Plan

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
ITEM = {
    "type": "record",
    "name": "Item",
    "fields": [
        {"name": "sku", "type": "string"},
        {
            "name": "price",
            "type": [
                "null",
                {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2},
            ],
        },
    ],
}
EVERYTHING = fastavro.parse_schema(
    {
        "type": "record",
        "name": "Everything",
        "namespace": "t",
        "fields": [
            {"name": "nothing", "type": "null"},
            {"name": "flag", "type": "boolean"},
            {"name": "small", "type": "int"},
            {"name": "big", "type": "long"},
            {"name": "single", "type": "float"},
            {"name": "double", "type": "double"},
            {"name": "raw", "type": "bytes"},
            {"name": "text", "type": "string"},
            {
                "name": "colour",
                "type": {"type": "enum", "name": "Colour", "symbols": ["RED", "GREEN", "BLUE"]},
            },
            {"name": "four", "type": {"type": "fixed", "name": "Four", "size": 4}},
            {"name": "longs", "type": {"type": "array", "items": "long"}},
            {"name": "labels", "type": {"type": "map", "values": ["null", "string"]}},
            {"name": "either", "type": ["null", "string", "long", "Colour"]},
            {"name": "items", "type": {"type": "array", "items": ITEM}},
            {"name": "first_item", "type": ["null", "Item"]},
            {
                "name": "price",
                "type": {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2},
            },
            {
                "name": "count",
                "type": {"type": "bytes", "logicalType": "decimal", "precision": 38, "scale": 0},
            },
            {
                "name": "money",
                "type": {
                    "type": "fixed",
                    "name": "Money",
                    "size": 8,
                    "logicalType": "decimal",
                    "precision": 18,
                    "scale": 4,
                },
            },
            {"name": "at_ms", "type": {"type": "long", "logicalType": "timestamp-millis"}},
            {"name": "at_us", "type": {"type": "long", "logicalType": "timestamp-micros"}},
            {"name": "local_ms", "type": {"type": "long", "logicalType": "local-timestamp-millis"}},
            {"name": "local_us", "type": {"type": "long", "logicalType": "local-timestamp-micros"}},
            {"name": "day", "type": {"type": "int", "logicalType": "date"}},
            {"name": "made_up", "type": {"type": "string", "logicalType": "made-up"}},
        ],
    }
)
EPOCH_DAY = date(1970, 1, 1).toordinal()
# Inside datetime's years 1..9999, and beyond them (fastavro raises, so the plan must step aside).
MILLIS = st.integers(-62_135_596_800_000, 253_402_300_799_999) | st.integers(-(2**62), 2**62)


def _decimal(digits: int, scale: int) -> st.SearchStrategy[Decimal]:
    bound = 10**digits - 1
    return st.integers(-bound, bound).map(lambda unscaled: Decimal(unscaled).scaleb(-scale))


TEXT = st.text(max_size=12)
ITEMS = st.fixed_dictionaries({"sku": TEXT, "price": st.none() | _decimal(9, 2)})
RECORDS = st.fixed_dictionaries(
    {
        "nothing": st.none(),
        "flag": st.booleans(),
        "small": st.integers(-(2**31), 2**31 - 1),
        "big": st.integers(-(2**63), 2**63 - 1),
        "single": st.floats(width=32, allow_nan=False),
        "double": st.floats(allow_nan=False),
        "raw": st.binary(max_size=8),
        "text": TEXT,
        "colour": st.sampled_from(["RED", "GREEN", "BLUE"]),
        "four": st.binary(min_size=4, max_size=4),
        "longs": st.lists(st.integers(-(2**63), 2**63 - 1), max_size=4),
        "labels": st.dictionaries(TEXT, st.none() | TEXT, max_size=3),
        "either": st.none() | TEXT | st.integers(-(2**63), 2**63 - 1),
        "items": st.lists(ITEMS, max_size=3),
        "first_item": st.none() | ITEMS,
        "price": _decimal(12, 2),
        "count": _decimal(37, 0),
        "money": st.integers(-(10**17), 10**17).map(lambda unscaled: Decimal(unscaled).scaleb(-4)),
        "at_ms": MILLIS,
        "at_us": MILLIS,
        "local_ms": MILLIS,
        "local_us": MILLIS,
        "day": st.integers(-(2**31), 2**31 - 1),
        "made_up": TEXT,
    }
)


def encode(schema: Any, record: Any) -> bytes:
    buffer = BytesIO()
    fastavro.schemaless_writer(buffer, schema, record)
    return buffer.getvalue()


def fastavro_read(schema: Any, value: bytes, offset: int = 0) -> tuple[Any, int]:
    buffer = BytesIO(value)
    buffer.seek(offset)
    return fastavro.schemaless_reader(buffer, schema, None), buffer.tell()


def compiled(schema: Any) -> Plan:
    plan = compiled_decoder(schema)
    assert plan is not None
    return plan


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(RECORDS, st.binary(max_size=3))
def test_compiled_reads_what_fastavro_reads_or_steps_aside(record: Any, prefix: bytes) -> None:
    value = prefix + encode(EVERYTHING, record)
    read = compiled(EVERYTHING).decode(value, len(prefix))
    try:
        expected = fastavro_read(EVERYTHING, value, len(prefix))
    except (OverflowError, ValueError):
        assert read is None  # a date or time fastavro cannot build: its error is the verdict
        return
    assert read is not None
    assert repr(read[0]) == repr(expected[0])  # repr: Decimal('1.0') == Decimal('1.00') too
    assert read[1] == expected[1] == len(value)


@settings(max_examples=600)
@given(st.binary(max_size=200))
def test_on_any_bytes_the_compiled_answer_is_fastavros(value: bytes) -> None:
    for schema in (EVERYTHING, fastavro.parse_schema(_sample("order_event.v1.avsc"))):
        read = compiled(schema).decode(value, 0)
        if read is not None:  # it answered: fastavro must give the same answer
            assert repr(fastavro_read(schema, value)[0]) == repr(read[0])
            assert fastavro_read(schema, value)[1] == read[1]


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(RECORDS, st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=3))
def test_on_damaged_records_the_compiled_answer_is_fastavros(
    record: Any, damage: list[tuple[int, int]]
) -> None:
    value = bytearray(encode(EVERYTHING, record))
    for position, byte in damage:
        value[position % len(value)] = byte
    read = compiled(EVERYTHING).decode(bytes(value), 0)
    if read is not None:  # mostly still readable: both must read the same thing
        expected = fastavro_read(EVERYTHING, bytes(value))
        assert repr(read[0]) == repr(expected[0])
        assert read[1] == expected[1]


def test_sample_orders_decode_the_same_both_ways() -> None:
    schema = fastavro.parse_schema(_sample("order_event.v1.avsc"))
    record = {
        "order_id": "o-1",
        "event_type": "ORDER_PAID",
        "occurred_at": datetime(2026, 12, 4, 6, 30, 1, 123000, tzinfo=UTC),
        "store_id": "s",
        "channel": "IOS",
        "customer": {"customer_id": "c", "date_of_birth": date(1990, 2, 28), "address": None},
        "context": {},
        "items": [{"sku": "a", "name": "b", "unit_price": Decimal("-0.05"), "quantity": 2}],
        "currency": "EUR",
        "total": Decimal("0.00"),
        "consent": {},
        "is_test": True,
    }
    value = encode(schema, record)
    read = compiled(schema).decode(value, 0)
    assert read is not None
    assert repr(read[0]) == repr(fastavro_read(schema, value)[0])
    assert read[0]["occurred_at"] == record["occurred_at"]
    assert read[0]["customer"]["date_of_birth"] == date(1990, 2, 28)


@pytest.mark.parametrize("path", sorted(SCHEMAS.glob("*.avsc")), ids=lambda p: p.name)
def test_every_shipped_schema_has_a_plan(path: Path) -> None:
    assert plan_for(fastavro.parse_schema(json.loads(path.read_text()))) is not None


@pytest.mark.parametrize(
    "schema",
    [
        {  # recursive: a linked list
            "type": "record",
            "name": "Node",
            "fields": [{"name": "next", "type": ["null", "Node"]}],
        },
        {
            "type": "record",
            "name": "U",
            "fields": [{"name": "id", "type": {"type": "string", "logicalType": "uuid"}}],
        },
        {
            "type": "record",
            "name": "T",
            "fields": [{"name": "t", "type": {"type": "int", "logicalType": "time-millis"}}],
        },
        {
            "type": "record",
            "name": "D",
            "fields": [
                {
                    "name": "d",
                    "type": {
                        "type": "bytes",
                        "logicalType": "decimal",
                        "precision": 40,
                        "scale": 2,
                    },
                }
            ],
        },
    ],
    ids=["recursive", "uuid", "time-millis", "decimal-40-digits"],
)
def test_schemas_the_plan_cannot_read_exactly_are_left_to_fastavro(schema: Any) -> None:
    assert plan_for(fastavro.parse_schema(schema)) is None


def _decimal_schema(precision: int) -> Any:
    decimal = {"type": "bytes", "logicalType": "decimal", "precision": precision, "scale": 1}
    return fastavro.parse_schema(
        {"type": "record", "name": "P", "fields": [{"name": "p", "type": decimal}]}
    )


def test_a_decimal_wider_than_its_precision_is_left_to_fastavro() -> None:
    schema = _decimal_schema(3)
    value = encode(_decimal_schema(10), {"p": Decimal("123.4")})  # a writer that broke its word
    assert compiled(schema).decode(value, 0) is None
    assert fastavro_read(schema, value)[0] == {"p": Decimal("123")}  # rounded to 3 digits


def test_truncated_bytes_and_offsets_past_the_end_are_left_to_fastavro() -> None:
    schema = fastavro.parse_schema(_sample("order_event.v1.avsc"))
    plan = compiled(schema)
    assert plan.decode(b"", 0) is None
    assert plan.decode(b"\x02a", 5) is None
    assert plan.decode(b"\x02", 0) is None  # a string of length 1 with no byte


def test_a_huge_array_count_over_few_bytes_is_left_to_fastavro() -> None:
    schema = fastavro.parse_schema({"type": "array", "items": "null"})
    assert compiled(schema).decode(b"\x80\x80\x80\x80\x10", 0) is None
    assert compiled(schema).decode(b"\x06\x00", 0) == ([None, None, None], 2)


def _sample(name: str) -> Any:
    return json.loads((SCHEMAS / name).read_text())
