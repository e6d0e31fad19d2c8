"""The baseline: the shape of most existing integrations. Poll one message, decode it, map it,
POST it alone, commit, repeat.

    python -m bench.naive --bootstrap B --registry URL --topic T --url SINK --max-events N
"""

from __future__ import annotations

import argparse
import http.client
import json
import struct
import time
from io import BytesIO
from pathlib import Path
from urllib.parse import urlparse

import fastavro
import orjson
import yaml
from confluent_kafka import Consumer

from consumer.conversion.rules import compile_mapping
from consumer.engine.process import RecordProcessor, hasher_for
from consumer.records import Coordinates, Decoded, Envelope, Skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--registry", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--mapping", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--max-events", type=int, default=5000)
    parser.add_argument("--max-seconds", type=float, default=30)
    args = parser.parse_args()
    mapping = compile_mapping(yaml.safe_load(Path(args.mapping).read_text()))
    processor = RecordProcessor(mapping, hasher=hasher_for(mapping, cache_size=0))
    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": "naive-baseline",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([args.topic])
    target = urlparse(args.url)
    connection = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
    schemas: dict[int, object] = {}
    started = None
    done = 0
    while done < args.max_events:
        message = consumer.poll(1.0)
        if message is None or message.error():
            continue
        started = started or time.monotonic()
        value = message.value() or b""
        schema_id = struct.unpack(">I", value[1:5])[0]
        if schema_id not in schemas:
            with __import__("urllib.request").request.urlopen(
                f"{args.registry}/schemas/ids/{schema_id}"
            ) as response:
                schemas[schema_id] = fastavro.parse_schema(
                    json.loads(json.loads(response.read())["schema"])
                )
        record = fastavro.schemaless_reader(BytesIO(value[5:]), schemas[schema_id], None)
        envelope = Envelope(
            Coordinates(message.topic(), message.partition(), message.offset()), value=value
        )
        built = processor.build_decoded(
            Decoded(envelope, record, "com.example.shop.orders.OrderEvent"), int(time.time())
        )
        if not isinstance(built, Skip):
            event = built.event
            connection.request(
                "POST",
                f"/v5/ad_accounts/{built.ad_account}/events",
                body=orjson.dumps({"data": [event]}),
                headers={"Authorization": "Bearer bench", "Content-Type": "application/json"},
            )
            connection.getresponse().read()
        consumer.commit(message, asynchronous=False)
        done += 1
        if time.monotonic() - started > args.max_seconds:
            break
    elapsed = time.monotonic() - (started or time.monotonic())
    consumer.close()
    print(json.dumps({"events": done, "elapsed_s": elapsed}))


if __name__ == "__main__":
    main()
