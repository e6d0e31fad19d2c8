from __future__ import annotations

import json
import struct
from io import BytesIO
from pathlib import Path
from typing import Any

import fastavro
import pytest

from consumer.errors import PermanentError, TransientError
from consumer.records import Coordinates, Envelope
from consumer.stages.avroplan import decoder_in_use
from consumer.stages.decode import Decoder, _Schema, load_reader_schemas

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
V1 = fastavro.parse_schema(json.loads((SCHEMAS / "engagement_event.v1.avsc").read_text()))
RECORD = {
    "event_uuid": "u1",
    "event_type": "SEARCH",
    "occurred_at": 1_700_000_000_000,
    "store_id": "s",
    "platform": "WEB",
    "session_id": "x",
    "user_id": None,
    "email": None,
    "email_sha256": None,
    "advertising_id": None,
    "ip_address": None,
    "user_agent": None,
    "epik": None,
    "page_url": "https://x",
    "search_query": "q",
    "category": None,
    "product_ids": [],
    "cart_value": None,
    "currency": None,
    "ads_consent": True,
}


class FakeRegistry:
    def __init__(self, schemas: dict[int, str], is_down: bool = False) -> None:
        self.schemas = schemas
        self.is_down = is_down
        self.calls = 0

    async def fetch(self, schema_id: int) -> str | None:
        self.calls += 1
        if self.is_down:
            raise TransientError("schema registry unreachable")
        return self.schemas.get(schema_id)


def avro(record: dict[str, Any], schema: Any = V1) -> bytes:
    buffer = BytesIO()
    fastavro.schemaless_writer(buffer, schema, record)
    return buffer.getvalue()


def wire(schema_id: int, payload: bytes) -> bytes:
    return struct.pack(">bI", 0, schema_id) + payload


def envelope(value: bytes, topic: str = "shop.engagement") -> Envelope:
    return Envelope(Coordinates(topic, 0, 0), value=value)


async def test_decode_wire_format_caches_schema_and_resolves_to_reader() -> None:
    registry = FakeRegistry({7: (SCHEMAS / "engagement_event.v1.avsc").read_text()})
    decoder = Decoder(registry, {}, load_reader_schemas(SCHEMAS))  # type: ignore[arg-type]
    messages = [envelope(wire(7, avro(RECORD))) for _ in range(3)]
    await decoder.prepare(messages)
    await decoder.prepare(messages)
    decoded = decoder.decode(messages[0])
    assert registry.calls == 1
    assert decoded.record_name == "com.example.shop.engagement.EngagementEvent"
    assert decoded.record["search_query"] == "q"
    assert decoded.record["referrer"] is None  # v2 reader adds the field with its default


@pytest.mark.parametrize(("value", "reason"), [
    (b"", "decode.too_short"),
    (b"\x01\x00\x00\x00\x07abc", "decode.bad_magic_byte"),
    (wire(99, b"abc"), "decode.unknown_schema_id"),
    (wire(7, avro(RECORD)[:10]), "decode.bad_avro"),
    (wire(7, avro(RECORD) + b"\x00\x00"), "decode.trailing_bytes"),
])  # fmt: skip
async def test_decode_poison_is_permanent_with_reason(value: bytes, reason: str) -> None:
    registry = FakeRegistry({7: (SCHEMAS / "engagement_event.v1.avsc").read_text()})
    decoder = Decoder(registry, {}, {})  # type: ignore[arg-type]
    await decoder.prepare([envelope(value)])
    with pytest.raises(PermanentError) as info:
        decoder.decode(envelope(value))
    assert info.value.reason == reason


async def test_decode_unknown_schema_id_is_held_for_its_grace_then_dead_lettered() -> None:
    """A registry follower that has not caught up answers 404: hold, don't dead-letter at once
    (issue 24); past the grace, the id is unknown and its records go to the dead-letter topic."""
    now = [1000.0]
    registry = FakeRegistry({})
    decoder = Decoder(registry, {}, {}, clock=lambda: now[0], unknown_schema_grace_s=60)  # type: ignore[arg-type]
    held = [envelope(wire(9, avro(RECORD)))]
    with pytest.raises(TransientError, match="schema id 9 not in the registry yet"):
        await decoder.prepare(held)
    now[0] += 30
    with pytest.raises(TransientError):
        await decoder.prepare(held)
    registry.schemas[9] = (SCHEMAS / "engagement_event.v1.avsc").read_text()  # caught up
    await decoder.prepare(held)
    assert decoder.decode(held[0]).record["search_query"] == "q"
    other = [envelope(wire(10, avro(RECORD)))]
    with pytest.raises(TransientError):
        await decoder.prepare(other)
    now[0] += 61
    await decoder.prepare(other)  # the grace is over: unknown
    with pytest.raises(PermanentError) as info:
        decoder.decode(other[0])
    assert info.value.reason == "decode.unknown_schema_id"


async def test_decode_registry_outage_is_transient() -> None:
    decoder = Decoder(FakeRegistry({}, is_down=True), {}, {})  # type: ignore[arg-type]
    with pytest.raises(TransientError):
        await decoder.prepare([envelope(wire(7, avro(RECORD)))])


async def test_decode_local_avsc_plain_avro_without_header() -> None:
    decoder = Decoder(None, {"shop.engagement": V1}, {})
    await decoder.prepare([envelope(avro(RECORD))])
    assert decoder.decode(envelope(avro(RECORD))).record["event_uuid"] == "u1"


@pytest.mark.skipif(decoder_in_use() != "compiled", reason="the compiled decoder is off")
def test_a_reader_schema_equal_to_the_writer_keeps_the_compiled_decoder() -> None:
    name = "com.example.shop.engagement.EngagementEvent"
    v2 = load_reader_schemas(SCHEMAS)[name]
    assert _Schema.of(V1, {name: V1}).compiled is not None  # nothing to resolve
    resolving = _Schema.of(V1, {name: v2})
    assert resolving.reader is v2 and resolving.compiled is None  # fastavro resolves v1 → v2


@pytest.mark.parametrize(
    "payload",
    [
        avro(RECORD)[:10],  # truncated inside a string
        b"\x02u" + b"\x0e" + avro(RECORD)[3:],  # enum index 7 of 6 symbols
        b"\x04\xff\xfe" + avro(RECORD)[4:],  # a string that is not UTF-8
        b"\x02u1" + b"\x0e",  # truncated after a bad enum index
    ],
    ids=["truncated", "enum-index", "not-utf8", "short-bad-enum"],
)
def test_bad_bytes_get_fastavros_own_verdict(payload: bytes) -> None:
    decoder = Decoder(None, {"shop.engagement": V1}, {})
    with pytest.raises(PermanentError) as info:
        decoder.decode(envelope(payload))
    with pytest.raises(Exception) as fastavro_error:
        fastavro.schemaless_reader(BytesIO(payload), V1, None)
    assert info.value.reason == "decode.bad_avro"
    assert info.value.detail == type(fastavro_error.value).__name__


@pytest.mark.parametrize("mode", ["fastavro", "auto"])
def test_capi_avro_decoder_chooses_who_decodes(mode: str) -> None:
    """Issue 26: CAPI_AVRO_DECODER=fastavro turns the compiled decoder off, in production too."""
    schema = _Schema.of(V1, {}, mode)
    assert (schema.compiled is not None) == (decoder_in_use(mode) == "compiled")
    if mode == "fastavro":
        assert schema.compiled is None
    decoder = Decoder(None, {"shop.engagement": V1}, {}, mode=mode)
    assert decoder.decode(envelope(avro(RECORD))).record["event_uuid"] == "u1"
