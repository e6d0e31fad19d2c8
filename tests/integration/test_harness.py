"""The harness itself: Avro in Confluent wire format through a real broker and registry."""

from __future__ import annotations

import random
import struct
import time
from collections.abc import Callable
from io import BytesIO
from typing import Any

import fastavro
from confluent_kafka.aio import AIOConsumer
from confluent_kafka.schema_registry import SchemaRegistryClient

from devenv.kafka import KafkaBroker, shared_producer
from devenv.registry import SchemaRegistry
from devenv.samples import load_schema, order_record, register, wire_encode


async def test_harness_wire_format_round_trip_matches_field_by_field(
    kafka: KafkaBroker, registry: SchemaRegistry, topic_name: Callable[[str], str]
) -> None:
    topic = topic_name("harness")
    kafka.create_topic(topic, partitions=3)
    schema_id = register(registry.url, f"{topic}-value", "order_event.v1.avsc")
    schema = load_schema("order_event.v1.avsc")
    rng = random.Random(1)
    now_ms = int(time.time() * 1000)
    records = [order_record(rng, n, now_ms) for n in range(50)]
    producer = shared_producer(kafka.bootstrap)
    for record in records:
        producer.produce(
            topic, key=record["order_id"], value=wire_encode(schema_id, schema, record)
        )
    assert producer.flush(30) == 0

    consumer = AIOConsumer(
        {"bootstrap.servers": kafka.bootstrap, "group.id": topic, "auto.offset.reset": "earliest"}
    )
    await consumer.subscribe([topic])
    received: list[bytes] = []
    deadline = time.monotonic() + 30
    while len(received) < len(records) and time.monotonic() < deadline:
        for message in await consumer.consume(100, 0.5):
            assert message.error() is None
            received.append(message.value())
    await consumer.close()

    writer = fastavro.parse_schema(
        __import__("json").loads(
            SchemaRegistryClient({"url": registry.url}).get_schema(schema_id).schema_str
        )
    )
    by_id = {r["order_id"]: r for r in records}
    assert len(received) == len(records)
    for raw in received:
        magic, seen_id = struct.unpack(">bI", raw[:5])
        assert (magic, seen_id) == (0, schema_id)
        decoded: dict[str, Any] = fastavro.schemaless_reader(  # type: ignore[assignment]
            BytesIO(raw[5:]), writer, schema
        )  # a record schema decodes to a dict
        expected = by_id[decoded["order_id"]]
        for field, value in expected.items():
            if field == "occurred_at":
                assert int(decoded[field].timestamp() * 1000) == value
            else:
                assert decoded[field] == value, field
