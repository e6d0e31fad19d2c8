from __future__ import annotations

import hashlib
from decimal import Decimal

import pytest

from consumer.conversion.hashing import UserDataHasher
from consumer.conversion.normalize import (
    normalize_conversion,
    normalize_currency,
    normalize_custom_data,
)
from consumer.conversion.userdata import NormalizeOptions
from consumer.conversion.values import OutOfBounds
from tests.conftest import ConversionFactory


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_currency_is_an_iso_code_or_out_of_bounds() -> None:
    assert normalize_currency(" usd ") == "USD"
    for bad in ("XYZ", "usdollar", "\uff35\uff33\uff24"):  # full-width USD
        with pytest.raises(OutOfBounds):
            normalize_currency(bad)


def test_normalize_custom_data_types() -> None:
    custom, dropped = normalize_custom_data(
        {
            "value": Decimal("10.50"),
            "currency": "eur",
            "num_items": 2,
            "content_ids": ["a", 1],
            "contents": [{"id": "a", "item_price": 5.25, "quantity": "2", "item_name": None}],
            "order_id": 123,
            "search_string": None,
        }
    )
    assert custom == {
        "value": "10.5",
        "currency": "EUR",
        "num_items": 2,
        "content_ids": ["a", "1"],
        "contents": [{"id": "a", "item_price": "5.25", "quantity": 2}],
        "order_id": "123",
    }
    assert dropped == []


def test_custom_data_values_that_do_not_fit_are_left_out_with_their_reason() -> None:
    """Issue 24: each of these crashed the group, built a gigabyte, or reached Pinterest."""
    custom, dropped = normalize_custom_data(
        {
            "value": "1e999999999",
            "predicted_ltv": float("nan"),
            "currency": "dollars",
            "num_items": 10**25,
            "content_ids": ["ok", b"\xc3(", True, "x"],
            "contents": [
                {"id": "a", "quantity": "²", "item_price": "٣"},
                {"id": "b", "quantity": 2**70},
                "not an item",
            ],
            "order_id": b"ord-1",
            "search_string": "s" * 20_000,
        }
    )
    assert custom == {
        "content_ids": ["ok", "x"],
        "contents": [{"id": "a"}, {"id": "b"}],
        "order_id": "ord-1",  # Avro bytes read as UTF-8, never Python's repr
    }
    assert sorted(dropped) == sorted([
        ("custom_data.value", "invalid"),
        ("custom_data.predicted_ltv", "invalid"),
        ("custom_data.currency", "invalid"),
        ("custom_data.num_items", "invalid"),
        ("custom_data.content_ids", "wrong_type"),
        ("custom_data.content_ids", "wrong_type"),
        ("custom_data.contents.quantity", "wrong_type"),
        ("custom_data.contents.item_price", "wrong_type"),
        ("custom_data.contents.quantity", "invalid"),
        ("custom_data.contents", "wrong_type"),
        ("custom_data.search_string", "too_long"),
    ])  # fmt: skip
    _, dropped = normalize_custom_data({"content_ids": ["a"] * 1001})
    assert dropped == [("custom_data.content_ids", "too_long")]


def test_normalize_conversion_returns_new_record_keeping_coordinates(
    conversion_factory: ConversionFactory,
) -> None:
    conversion = conversion_factory(offset=7, user_data={"em": "X@Y.z"})
    normalized = normalize_conversion(conversion, UserDataHasher(NormalizeOptions()))
    assert normalized.coords == conversion.coords
    assert normalized.event["user_data"] == {"em": [sha("x@y.z")]}
    assert conversion.event["user_data"] == {"em": "X@Y.z"}
    assert normalized.dropped == ()


def test_normalize_conversion_omits_bad_identifier_keeps_event_and_says_why(
    conversion_factory: ConversionFactory,
) -> None:
    conversion = conversion_factory(user_data={"em": "x@y.z", "ph": "12", "ge": "unknown"})
    normalized = normalize_conversion(conversion, UserDataHasher(NormalizeOptions()))
    assert normalized.event["user_data"] == {"em": [sha("x@y.z")]}
    assert normalized.dropped == (("ph", "invalid"), ("ge", "no_value"))


def test_the_5_28_custom_data_fields_in_their_types() -> None:
    custom, dropped = normalize_custom_data(
        {
            "np": "ss-shop",
            "external_measurement_id": 12,
            "external_measurement_vendor_id": "7",
            "contents": [{"id": "a", "item_brand_id": 99}],
        }
    )
    assert custom == {
        "np": "ss-shop",
        "external_measurement_id": "12",
        "external_measurement_vendor_id": 7,
        "contents": [{"id": "a", "item_brand_id": "99"}],
    }
    assert dropped == []
