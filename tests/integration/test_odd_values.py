"""Issue 24, done when: ordinary orders mixed with records carrying every odd value run through
`consumer run` on a real broker with the process alive throughout. Every ordinary event is
delivered; every odd record is delivered with the bad field left out or dead-lettered with its
reason; Pinterest (the sandbox, which validates like the API) sees nothing invalid; memory stays
bounded; and `consumer transform` prints no traceback for any of them."""

from __future__ import annotations

import io
import json
import math
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import fastavro
import yaml

from devenv.kafka import KafkaBroker, shared_producer
from devenv.registry import SchemaRegistry
from tests.integration.rig import ConsumerProcess, SandboxProcess, Topics, read_all

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "549755885175"
SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "LooseOrder",
    "namespace": "com.example.loose",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "time", "type": ["long", "double", "string"]},
        {"name": "account", "type": "string"},
        {"name": "email", "type": "string"},
        {"name": "value", "type": ["string", "double"]},
        {"name": "num_items", "type": ["long", "string", "double"]},
        {"name": "note", "type": "bytes"},
        {"name": "skus", "type": {"type": "array", "items": "string"}},
        {
            "name": "items",
            "type": {
                "type": "array",
                "items": {
                    "type": "record",
                    "name": "Item",
                    "fields": [
                        {"name": "sku", "type": "string"},
                        {"name": "qty", "type": ["long", "string", "double"]},
                    ],
                },
            },
        },
    ],
}


def mapping(topic: str) -> dict[str, Any]:
    return {
        "topics": [
            {
                "topic": topic,
                "event_name": "checkout",
                "action_source": "web",
                "ad_account": {"field": "account"},
                "event_id": "{id}",
                "event_time": {"field": "time", "unit": "seconds"},
                "user_data": {"em": "email"},
                "custom_data": {
                    "value": "value",
                    "num_items": "num_items",
                    "content_name": "note",
                    "content_ids": "skus",
                    "contents": {"each": "items", "fields": {"id": "sku", "quantity": "qty"}},
                },
            }
        ]
    }


def ordinary(n: int, now_s: int) -> dict[str, Any]:
    return {
        "id": f"ord-{n}",
        "time": now_s - 60,
        "account": ACCOUNT,
        "email": f"buyer{n}@example.com",
        "value": f"{n % 500}.25",
        "num_items": 2,
        "note": b"summer sale",
        "skus": ["sku-1", "sku-2"],
        "items": [{"sku": "sku-1", "qty": 1}, {"sku": "sku-2", "qty": 1}],
    }


def odd_records(now_s: int) -> list[tuple[dict[str, Any], str]]:
    """(record, what must become of it): 'delivered' (bad field left out) or a reason."""
    odd: list[tuple[dict[str, Any], str]] = []

    def one(fate: str, **changes: Any) -> None:
        record = ordinary(0, now_s)
        record.update({"id": f"odd-{len(odd)}", **changes})
        odd.append((record, fate))

    one("delivered", num_items="1" + "0" * 24)  # 25 digits
    one("delivered", items=[{"sku": "a", "qty": "9" * 25}])
    one("delivered", items=[{"sku": "a", "qty": "²"}])
    one("delivered", items=[{"sku": "a", "qty": "٣"}])
    one("delivered", num_items=float("inf"))
    one("delivered", value="1e999999999")
    one("delivered", value="1e400")
    one("delivered", value=float("nan"))
    one("delivered", note=b"\xc3(\xa0")  # not UTF-8
    one("delivered", skus=[f"sku-{i}" for i in range(10_000)])
    one("map.bad_event_time", time=float("nan"))
    one("map.bad_event_time", time=float("inf"))
    one("map.bad_event_time", time="1" * 5000)
    one("map.too_long", id="x" * 5000)
    one("map.bad_ad_account", account="²")
    one("map.bad_ad_account", account="٣٣٣")
    return odd


def encode(record: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(SCHEMA), record)
    return buffer.getvalue()


def test_odd_values_never_stop_the_group_or_reach_pinterest_invalid(
    kafka: KafkaBroker,
    registry: SchemaRegistry,
    sandbox: SandboxProcess,
    topics: Topics,
    tmp_path: Path,
) -> None:
    now_s = int(time.time())
    schema_file = tmp_path / "loose.avsc"
    schema_file.write_text(json.dumps(SCHEMA))
    mapping_file = tmp_path / "loose.yaml"
    mapping_file.write_text(yaml.safe_dump(mapping(topics.orders)))
    odd = odd_records(now_s)
    rng = random.Random(24)
    records = [(ordinary(n, now_s), "delivered") for n in range(3000)]
    for record, fate in odd:  # each odd record somewhere in the stream
        records.insert(rng.randrange(len(records)), (record, fate))
    producer = shared_producer(kafka.bootstrap)
    for i, (record, _) in enumerate(records):
        producer.produce(topics.orders, value=encode(record), key=str(i % 8).encode())
    assert producer.flush(30) == 0

    consumer = ConsumerProcess(
        tmp_path,
        kafka,
        topics,
        registry.url,
        sandbox.url,
        "odd",
        CAPI_MAPPING_FILE=str(mapping_file),
        CAPI_LOCAL_SCHEMAS=f"{topics.orders}={schema_file}",
    )
    try:
        consumer.start()
        stats = consumer.wait_final(len(records))
        assert consumer.server is not None and consumer.server.proc.poll() is None  # alive
        rss_mb = peak_rss_mb(consumer.server.proc.pid)
        assert consumer.terminate() == 0
    finally:
        consumer.stop()

    reasons = [fate for _, fate in odd if fate != "delivered"]
    delivered_ids = {r["id"] for r, fate in records if fate == "delivered"}
    accepted = {e["event"]["event_id"]: e["event"] for e in sandbox.events()}
    assert set(accepted) == delivered_ids
    sandbox_stats = sandbox.stats()
    assert sandbox_stats["events_failed"] == 0
    assert set(sandbox_stats["statuses"]) == {"200"}, sandbox_stats["statuses"]
    assert stats["dead_lettered"] == len(reasons)
    dead = read_all(kafka, topics.dead_letter, len(reasons))
    assert sorted(h["capi.reason"].decode() for _, h in dead) == sorted(reasons)
    # What was left out of the delivered odd events, and what stayed.
    assert "num_items" not in accepted["odd-0"]["custom_data"]
    assert "value" not in accepted["odd-5"]["custom_data"]
    assert "content_name" not in accepted["odd-8"]["custom_data"]
    assert "content_ids" not in accepted["odd-9"]["custom_data"]
    assert accepted["ord-1"]["custom_data"]["content_name"] == "summer sale"  # bytes as text
    assert rss_mb < 500, rss_mb

    # `consumer transform` on the same odd records: one line each, no traceback.
    lines = "".join(
        json.dumps({"topic": topics.orders, "value": json_safe(record)}) + "\n"
        for record, _ in odd
        if all(not isinstance(v, float) or math.isfinite(v) for v in record.values())
    )
    run = subprocess.run(
        [sys.executable, "-m", "consumer", "transform", "--mapping", str(mapping_file)],
        input=lines,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stdout + run.stderr
    assert len(run.stdout.splitlines()) == lines.count("\n")


def json_safe(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v.decode("latin-1") if isinstance(v, bytes) else v for k, v in record.items()}


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0
