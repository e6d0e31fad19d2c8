"""The Python floor: the least any Python consumer doing this job must spend per event.

A bare loop over the same Avro messages with the same libraries and nothing else: fastavro
decode, normalize (strip, lowercase) and SHA-256 eight user_data fields, build the event dict,
orjson-encode it. No mapping rules, no validation, no Kafka, no HTTP, no bookkeeping. End-to-end
CPU per event is reported as a ratio to this, which cancels the machine's speed of the day.
"""

from __future__ import annotations

import hashlib
import time
from io import BytesIO
from typing import Any

import fastavro
import orjson

_HASHED = (
    ("em", "email"),
    ("ph", "phone"),
    ("fn", "first_name"),
    ("ln", "last_name"),
    ("external_id", "customer_id"),
)
_ADDRESS = (("ct", "city"), ("st", "state"), ("zp", "postal_code"))


def _sha(value: object) -> list[str]:
    return [hashlib.sha256(str(value).strip().lower().encode()).hexdigest()]


def floor_event(value: bytes, schema: Any) -> bytes:
    record: Any = fastavro.schemaless_reader(BytesIO(value[5:]), schema, None)
    customer = record["customer"]
    address = customer.get("address") or {}
    user_data = {key: _sha(customer[name]) for key, name in _HASHED if customer.get(name)}
    user_data.update({key: _sha(address[name]) for key, name in _ADDRESS if address.get(name)})
    context = record["context"]
    user_data["client_ip_address"] = context["ip_address"]
    user_data["client_user_agent"] = context["user_agent"]
    event = {
        "event_name": "checkout",
        "action_source": "web",
        "event_time": record["occurred_at"].timestamp().__int__(),
        "event_id": record["order_id"],
        "user_data": user_data,
        "custom_data": {"currency": record["currency"], "value": str(record["total"])},
    }
    return orjson.dumps(event)


def floor_us_per_event(values: list[bytes], schema: Any, rounds: int = 3) -> float:
    """CPU µs per event of the bare loop: the best of `rounds` passes (the floor is a floor)."""
    parsed = fastavro.parse_schema(schema)
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        for value in values:
            floor_event(value, parsed)
        best = min(best, time.process_time() - started)
    return best * 1e6 / max(1, len(values))
