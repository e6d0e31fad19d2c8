"""Realistic sample order and engagement records for the sample schemas, and their producer."""

from __future__ import annotations

import datetime as dt
import json
import random
import struct
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from io import BytesIO
from pathlib import Path
from typing import Any

import fastavro

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
ORDERS_TOPIC = "shop.orders"
ENGAGEMENT_TOPIC = "shop.engagement"

FIRST = [
    "Ana",
    "Björn",
    "Chloé",
    "Dmitri",
    "Emma",
    "François",
    "Günther",
    "Hana",
    "Ines",
    "José",
    "Kai",
    "Léa",
    "Marta",
    "Noah",
    "Olga",
    "Priya",
    "Quinn",
    "Ren",
    "Sofía",
    "Zoë",
]
LAST = [
    "García",
    "Müller",
    "O'Brien",
    "Nguyen",
    "Smith",
    "Dubois",
    "Rossi",
    "Kowalski",
    "Sato",
    "Johnson",
    "Ñúñez",
    "Andersson",
]
CITIES = [
    ("San Francisco", "CA", "94107", "US", "+1 (415) 555-{:04d}"),
    ("New York", "NY", "10001-2345", "US", "(212) 555-{:04d}"),
    ("London", "", "SW1A 1AA", "United Kingdom", "+44 (0)20 7946 {:04d}"),
    ("München", "", "80331", "DE", "0049 89 1234{:04d}"),
    ("Saint-Étienne", "", "42000", "France", "+33 4 77 12 {:04d}"),
]
PRODUCTS = [
    ("SKU-1001", "Linen throw", "Casa", "Home > Textiles", "49.90"),
    ("SKU-2002", "Ceramic vase", "Forma", "Home > Decor", "35.00"),
    ("SKU-3003", "Trail shoes", "Peak", "Sport > Shoes", "119.99"),
    ("SKU-4004", "Yoga mat", "Peak", "Sport > Yoga", "24.50"),
    ("SKU-5005", "Espresso cups", "Casa", "Kitchen", "18.75"),
]
AGENT = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Safari/605.1.15"
)


def _dob(rng: random.Random) -> dt.date:
    return dt.date(1950, 1, 1) + dt.timedelta(days=rng.randint(0, 20000))


def load_schema(name: str) -> dict[str, Any]:
    parsed = fastavro.parse_schema(json.loads((SCHEMAS / name).read_text()))
    assert isinstance(parsed, dict)  # every schema here is a record
    return dict(parsed)


def order_record(rng: random.Random, n: int, now_ms: int, version: int = 1) -> dict[str, Any]:
    city, state, postal, country, phone = rng.choice(CITIES)
    first, last = rng.choice(FIRST), rng.choice(LAST)
    items: list[dict[str, Any]] = []
    for sku, name, brand, category, price in rng.sample(PRODUCTS, rng.randint(1, 3)):
        items.append(
            {
                "sku": sku,
                "name": name,
                "brand": brand,
                "category": category,
                "unit_price": Decimal(price),
                "quantity": rng.randint(1, 3),
            }
        )
    total = sum((i["unit_price"] * i["quantity"] for i in items), Decimal("0"))
    record: dict[str, Any] = {
        "order_id": f"ord-{n:08d}",
        "event_type": "ORDER_PLACED" if rng.random() < 0.8 else "ORDER_PAID",
        "occurred_at": now_ms - rng.randint(0, 3_600_000),
        "store_id": rng.choice(["store-eu", "store-us"]),
        "channel": rng.choice(["WEB", "WEB", "WEB", "IOS", "ANDROID"]),
        "customer": {
            "customer_id": f"cust-{rng.randint(1, 5000)}",
            "email": f"{first.lower()}.{n % 997}@Example.com ",
            "phone": phone.format(rng.randint(0, 9999)),
            "first_name": first,
            "last_name": last,
            "date_of_birth": None if rng.random() < 0.5 else _dob(rng),
            "gender": rng.choice(["female", "male", "F", "non-binary", None]),
            "address": {
                "line1": "1 Main St",
                "city": city,
                "state": state or None,
                "postal_code": postal,
                "country": country,
            },
        },
        "context": {
            "ip_address": f"203.0.113.{rng.randint(1, 254)}",
            "user_agent": AGENT,
            "epik": f"dj0yJnU9{uuid.UUID(int=rng.getrandbits(128)).hex[:20]}",
            "page_url": "https://shop.example.com/checkout/thank-you",
            "language": "en",
        },
        "items": items,
        "currency": rng.choice(["USD", "EUR", "gbp"]),
        "total": total,
        "consent": {"ads_personalization": rng.random() > 0.05, "limited_data_processing": False},
        "is_test": rng.random() < 0.02,
    }
    if version == 2:
        record["coupon_code"] = rng.choice([None, "WELCOME10"])
    return record


# Numbers that are valid in each sample country, with enough free digits that every order can
# carry one of its own (the phone formats above repeat every 10,000).
UNIQUE_PHONES = [
    ("US", "San Francisco", "CA", "+1 (415) {a:03d}-{b:04d}"),
    ("US", "New York", "NY", "(212) {a:03d}-{b:04d}"),
    ("United Kingdom", "London", None, "+44 20 7{a:03d} {b:04d}"),
    ("DE", "München", None, "0049 89 {a:03d}{b:04d}"),
    ("France", "Saint-Étienne", None, "+33 4 77 {a2:02d} {b2:02d} {c2:02d}"),
]
_SYLLABLES = ["ka", "lo", "mi", "ren", "sa", "to", "vi", "el", "an", "jo", "ri", "us", "ne",
              "da", "fe", "go", "hi", "ul", "ze", "bo", "ça", "ñe", "ö", "wy"]  # fmt: skip


def _made_up_name(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(syllables)).capitalize()


def new_customer(record: dict[str, Any], rng: random.Random, n: int) -> dict[str, Any]:
    """The order as placed by a customer never seen before: their own email, phone, names,
    city spelling, postal code and date of birth (so no digest cache answers for them), across
    the same countries as `order_record`. Real order streams are mostly new customers."""
    country, city, state, phone = rng.choice(UNIQUE_PHONES)
    first, last = _made_up_name(rng, 3), _made_up_name(rng, 4)
    digits = {"a": rng.randint(200, 999), "b": rng.randint(0, 9999), "a2": rng.randint(10, 99),
              "b2": rng.randint(10, 99), "c2": rng.randint(10, 99)}  # fmt: skip
    customer = dict(record["customer"])
    customer.update(
        customer_id=f"cust-new-{n}",
        email=f"{first.lower()}.{last.lower()}.{n}@example-{n % 50}.com",
        phone=phone.format(**digits),
        first_name=first,
        last_name=last,
        date_of_birth=_dob(rng),
        address={
            "line1": f"{rng.randint(1, 999)} {_made_up_name(rng, 2)} St",
            "city": f"{city} {_made_up_name(rng, 2)}",  # a district: a city spelling of its own
            "state": state,
            "postal_code": f"{rng.randint(10000, 99999)}",
            "country": country,
        },
    )
    return {**record, "customer": customer}


def engagement_record(rng: random.Random, n: int, now_ms: int, version: int = 1) -> dict[str, Any]:
    kind = rng.choice(["PAGE_VIEW", "ADD_TO_CART", "SEARCH", "VIEW_CATEGORY", "SIGN_UP", "LEAD"])
    email = f"visitor{rng.randint(1, 3000)}@example.org" if rng.random() < 0.6 else None
    record: dict[str, Any] = {
        "event_uuid": str(uuid.UUID(int=rng.getrandbits(128))),
        "event_type": kind,
        "occurred_at": now_ms - rng.randint(0, 600_000),
        "store_id": rng.choice(["store-eu", "store-us"]),
        "platform": rng.choice(["WEB", "WEB", "IOS", "ANDROID"]),
        "session_id": f"sess-{n // 5}",
        "user_id": f"cust-{rng.randint(1, 5000)}" if email else None,
        "email": email,
        "email_sha256": None,
        "advertising_id": str(uuid.UUID(int=rng.getrandbits(128))) if rng.random() < 0.3 else None,
        "ip_address": f"198.51.100.{rng.randint(1, 254)}",
        "user_agent": AGENT,
        "epik": None,
        "page_url": f"https://shop.example.com/p/{n % 100}",
        "search_query": "linen throw" if kind == "SEARCH" else None,
        "category": "Home > Decor" if kind == "VIEW_CATEGORY" else None,
        "product_ids": ["SKU-1001"] if kind == "ADD_TO_CART" else [],
        "cart_value": 49.9 if kind == "ADD_TO_CART" else None,
        "currency": "USD" if kind == "ADD_TO_CART" else None,
        "ads_consent": rng.random() > 0.1,
    }
    if version == 2:
        record["referrer"] = "https://www.pinterest.com/"
    return record


def wire_encode(schema_id: int, schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    """Confluent wire format: magic byte 0, 4-byte big-endian schema id, Avro binary."""
    buffer = BytesIO()
    buffer.write(b"\x00" + struct.pack(">I", schema_id))
    fastavro.schemaless_writer(buffer, schema, record)
    return buffer.getvalue()


def register(registry_url: str, subject: str, schema_file: str) -> int:
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

    client = SchemaRegistryClient({"url": registry_url})
    return int(client.register_schema(subject, Schema((SCHEMAS / schema_file).read_text(), "AVRO")))


def sample_stream(
    count: int, seed: int = 7, duplicate_ratio: float = 0.05
) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(topic, schema file, record) triples: ~40% orders, the rest engagement, some re-sent."""
    rng = random.Random(seed)
    now_ms = int(time.time() * 1000)
    produced: list[tuple[str, str, dict[str, Any]]] = []
    for n in range(count):
        if produced and rng.random() < duplicate_ratio:
            yield rng.choice(produced)
            continue
        version = 1 if rng.random() < 0.5 else 2
        if rng.random() < 0.4:
            item = (
                ORDERS_TOPIC,
                f"order_event.v{version}.avsc",
                order_record(rng, n, now_ms, version),
            )
        else:
            item = (
                ENGAGEMENT_TOPIC,
                f"engagement_event.v{version}.avsc",
                engagement_record(rng, n, now_ms, version),
            )
        if len(produced) < 500:
            produced.append(item)
        yield item
