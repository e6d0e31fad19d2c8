from __future__ import annotations

import datetime as dt
import random
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from devenv.samples import engagement_record, order_record

ROOT = Path(__file__).resolve().parent.parent
MAPPING = ROOT / "schemas" / "mapping.example.yaml"


def jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    raise TypeError(type(value))


def run_transform(lines: list[bytes], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "consumer", "transform", "--mapping", str(MAPPING), *args],
        input=b"\n".join(lines).decode(),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def test_transform_cli_builds_drops_and_reports_errors() -> None:
    now_ms = int(time.time() * 1000)
    rng = random.Random(9)
    order = order_record(rng, 1, now_ms)
    order.update(event_type="ORDER_PLACED", is_test=False, store_id="store-us")
    order["consent"]["ads_personalization"] = True
    order["occurred_at"] = now_ms - 1000
    test_order = {**order, "is_test": True}
    engagement = engagement_record(rng, 2, now_ms)
    bad = {**order, "store_id": "store-nowhere"}
    lines = [
        orjson.dumps({"topic": t, "value": v, "record": r}, default=jsonable)
        for t, v, r in [
            ("shop.orders", order, "com.example.shop.orders.OrderEvent"),
            ("shop.orders", test_order, "com.example.shop.orders.OrderEvent"),
            ("shop.engagement", engagement, ""),
            ("shop.orders", bad, "com.example.shop.orders.OrderEvent"),
        ]
    ] + [b"not json"]
    result = run_transform(lines, "--summary")
    assert result.returncode == 0, result.stderr
    out = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert out[0]["ad_account_id"] == "549755885176"
    event = out[0]["event"]
    assert event["event_name"] == "checkout" and event["event_id"] == "ord-00000001"
    assert len(event["user_data"]["em"][0]) == 64
    assert isinstance(event["custom_data"]["value"], str)
    assert out[1] == {"dropped": "filter.test_order"}
    assert "event" in out[2]
    assert "ad_account" in out[3]["error"]
    assert "not JSON" in out[4]["error"]
    assert "built 2, dropped 1, errors 2" in result.stderr
    assert "em" in result.stderr


def test_transform_cli_bad_mapping_exits_nonzero_naming_key(tmp_path: Path) -> None:
    mapping = tmp_path / "bad.yaml"
    mapping.write_text("topics: []\n")
    result = subprocess.run(
        [sys.executable, "-m", "consumer", "transform", "--mapping", str(mapping)],
        input="",
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 2
    assert "topics" in result.stderr


def test_transform_sample_input_in_the_repository_shows_every_outcome() -> None:
    sample = ROOT / "schemas" / "records.sample.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "consumer", "transform", "--mapping", str(MAPPING),
         "--input", str(sample), "--summary", "--now", "1800000000"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert ["event" in o for o in out] == [True, True, False, False, True]
    assert out[1]["omitted"] == [{"field": "ph", "reason": "invalid"},
                                 {"field": "ge", "reason": "no_value"}]  # fmt: skip
    assert result.stderr.startswith("built 3, dropped 1, errors 1")
    assert "fields left out by normalization" in result.stderr


def test_transform_lists_the_extra_events_of_a_rule_with_also(tmp_path: Path) -> None:
    import yaml

    from consumer.tools.transform import transform_lines

    document = yaml.safe_load(MAPPING.read_text())
    document["topics"][0]["also"] = [
        {"event_name": "first_purchase", "event_id": "{order_id}-first"},
        {"event_name": {"field": "customer.email"}, "event_id": "{order_id}-x"},  # not a name
    ]
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(yaml.safe_dump(document))
    now_s = int(time.time())
    record = order_record(random.Random(1), 7, (now_s - 60) * 1000)
    record.update(event_type="ORDER_PLACED", is_test=False, store_id="store-us", channel="WEB")
    record["consent"] = {"ads_personalization": True}
    line = orjson.dumps(
        {"topic": "shop.orders", "value": record, "record": "com.example.shop.orders.OrderEvent"},
        default=jsonable,
    ).decode()
    out: list[str] = []

    class Sink:
        def write(self, text: str) -> None:
            out.append(text)

    summary = transform_lines(mapping, [line], Sink(), now_s)  # type: ignore[arg-type]
    result = orjson.loads(out[0])
    assert "also" in result, result
    first, failed = result["also"]
    assert first["event_name"] == "first_purchase"
    assert first["event_id"] == result["event"]["event_id"] + "-first"
    assert first["user_data"] == result["event"]["user_data"]
    assert failed["error"].startswith("map.bad_event_name: ")
    assert summary.startswith("built 1,")
