"""Produce realistic sample order and engagement events (Confluent wire format) to Kafka.

    python -m devenv.produce --bootstrap HOST:PORT --registry URL [--count N]

Creates the sample topics if they are missing. Used by `make demo` and docker-compose.
"""

from __future__ import annotations

import argparse
import sys
import time

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from devenv.kafka import collector_paused
from devenv.samples import (
    ENGAGEMENT_TOPIC,
    ORDERS_TOPIC,
    load_schema,
    register,
    sample_stream,
    wire_encode,
)

POISON = (b"\x00\x00\x00\x03\xe7garbage", b"not avro at all", b"\x00\x00\x00\x00\x01")


def ensure_topics(bootstrap: str, partitions: int, names: list[str]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 3})
    existing = set(admin.list_topics(timeout=30).topics)
    missing = [
        NewTopic(n, num_partitions=partitions, replication_factor=1)
        for n in names
        if n not in existing
    ]
    with collector_paused():  # admin results run Python on a librdkafka thread
        for future in (admin.create_topics(missing) if missing else {}).values():
            future.result(30)


def produce_samples(bootstrap: str, registry_url: str, count: int, with_poison: bool = True) -> int:
    """Register both versions of each schema, produce `count` records (+ poison); return total."""
    ids = {}
    for topic, stem in ((ORDERS_TOPIC, "order_event"), (ENGAGEMENT_TOPIC, "engagement_event")):
        for version in (1, 2):
            name = f"{stem}.v{version}.avsc"
            ids[name] = (register(registry_url, f"{topic}-value", name), load_schema(name))
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "log_level": 3})
    produced = 0
    for topic, name, record in sample_stream(count):
        schema_id, schema = ids[name]
        key = record.get("order_id") or record.get("session_id")
        producer.produce(topic, key=str(key), value=wire_encode(schema_id, schema, record))
        produced += 1
        if produced % 1000 == 0:
            producer.poll(0)
    for poison in POISON if with_poison else ():
        producer.produce(ORDERS_TOPIC, value=poison)
        produced += 1
    if producer.flush(60) != 0:
        raise RuntimeError("some sample records were not acknowledged by Kafka")
    return produced


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--registry", required=True, help="Confluent-compatible registry URL")
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--wait-s", type=float, default=60, help="wait this long for Kafka")
    args = parser.parse_args()
    deadline = time.monotonic() + args.wait_s
    while True:
        try:
            ensure_topics(
                args.bootstrap,
                args.partitions,
                [ORDERS_TOPIC, ENGAGEMENT_TOPIC, "capi.dead-letter"],
            )
            break
        except Exception as exc:
            if time.monotonic() > deadline:
                raise
            print(f"waiting for Kafka: {exc}", file=sys.stderr)
            time.sleep(2)
    total = produce_samples(args.bootstrap, args.registry, args.count)
    print(f"produced {total} records to {ORDERS_TOPIC} and {ENGAGEMENT_TOPIC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
