from __future__ import annotations

import hashlib
from decimal import Decimal

import pytest

from consumer.conversion.normalize import (
    format_decimal,
    format_int,
    normalize_conversion,
    normalize_currency,
    normalize_custom_data,
)
from consumer.conversion.userdata import NormalizeOptions, UserDataHasher
from consumer.errors import PermanentError
from tests.conftest import ConversionFactory


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize(("value", "expected"), [
    (72.39, "72.39"), (Decimal("72.390"), "72.39"), ("72.39", "72.39"), (100, "100"),
    (0.1 + 0.2, "0.30000000000000004"), (1e-7, "0.0000001"), (Decimal("1E+3"), "1000"),
    ("-0.00", "0"),
])  # fmt: skip
def test_format_decimal_plain_strings_without_float_artefacts(value: object, expected: str) -> None:
    assert format_decimal(value, "value") == expected


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "abc", True, None, "NaN"])
def test_format_decimal_rejects_non_numbers_naming_field(value: object) -> None:
    with pytest.raises(PermanentError) as info:
        format_decimal(value, "custom_data.value")
    assert "custom_data.value" in info.value.detail


def test_format_int_and_currency() -> None:
    assert format_int(3.0, "q") == 3
    assert format_int("4", "q") == 4
    with pytest.raises(PermanentError):
        format_int(2.5, "q")
    assert normalize_currency(" usd ") == "USD"
    with pytest.raises(PermanentError):
        normalize_currency("XYZ")


def test_normalize_custom_data_types() -> None:
    custom = normalize_custom_data(
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
