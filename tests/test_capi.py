from __future__ import annotations

from typing import Any

import pytest

from consumer.conversion.capi import InvalidEvent, validate_event
from consumer.conversion.userdata import is_hex_digest
from tests.conftest import valid_event

NOW = 1_700_000_100
DIGEST = "973dfe463ec85785f5f95af5ba3906eedb2d931c24e69824a89ea65dba4e813b"


def test_validate_accepts_a_complete_event() -> None:
    event = valid_event(
        event_source_url="https://x",
        opt_out=False,
        partner_name="ss-shop",
        language="en",
        custom_data={
            "value": "10.5",
            "currency": "USD",
            "content_ids": ["a"],
            "num_items": 1,
            "contents": [{"id": "a", "item_price": "10.5", "quantity": 1}],
            "opt_out_type": "LDP",
        },
        user_data={
            "ph": [DIGEST],
            "client_ip_address": "1.2.3.4",
            "client_user_agent": "UA",
            "click_id": "epik",
        },
    )
    validate_event(event, NOW)


@pytest.mark.parametrize(("change", "field", "is_structural"), [
    ({"event_name": "buy now!"}, "event_name", False),
    ({"event_name": "x" * 101}, "event_name", False),
    ({"action_source": "email"}, "action_source", False),
    ({"event_time": 1_700_000_000_000}, "event_time", False),
    ({"event_time": "1700000000"}, "event_time", True),
    ({"event_id": ""}, "event_id", False),
    ({"colour": "red"}, "colour", True),
    ({"user_data": {"em": ["test@example.com"]}}, "user_data.em", False),
    ({"user_data": {"em": DIGEST}}, "user_data.em", True),
    ({"user_data": {"ph": [DIGEST]}}, "user_data", False),
    ({"user_data": {"email": [DIGEST]}}, "user_data.email", True),
    ({"custom_data": {"value": 72.39}}, "custom_data.value", True),
    ({"custom_data": {"value": "72,39"}}, "custom_data.value", False),
    ({"custom_data": {"currency": "usd"}}, "custom_data.currency", False),
    ({"custom_data": {"price": "1"}}, "custom_data.price", True),
    ({"custom_data": {"num_items": "2"}}, "custom_data.num_items", True),
    ({"custom_data": {"contents": [{"id": "a", "quantity": 1.5}]}}, "quantity", True),
    ({"partner_name": "Shop"}, "partner_name", False),
    ({"opt_out": "yes"}, "opt_out", True),
])  # fmt: skip
def test_validate_rejects_naming_the_field(
    change: dict[str, Any], field: str, is_structural: bool
) -> None:
    with pytest.raises(InvalidEvent) as info:
        validate_event(valid_event(**change), NOW)
    assert field in str(info.value)
    assert info.value.is_structural is is_structural


def test_validate_missing_required_field() -> None:
    event = valid_event()
    del event["event_id"]
    with pytest.raises(InvalidEvent, match="event_id is required"):
        validate_event(event, NOW)


def test_is_hex_digest_only_lowercase_64_hex() -> None:
    assert is_hex_digest(DIGEST)
    assert not is_hex_digest(DIGEST.upper())
    assert not is_hex_digest(DIGEST[:-1])


def test_validate_accepts_custom_event_names_within_pinterests_rule() -> None:
    """Issue 25 part 1: advertiser-defined names; the sandbox validates with this check."""
    validate_event(valid_event(event_name="first_purchase"), NOW)
    validate_event(valid_event(event_name="Repeat-Buyer-2"), NOW)


def test_validate_accepts_the_5_28_custom_data_fields() -> None:
    """Issue 25 part 2: np, the measurement vendor fields and contents[].item_brand_id."""
    event = valid_event(
        custom_data={
            "np": "ss-capi-consumer",
            "external_measurement_id": "m-1",
            "external_measurement_vendor_id": 7,
            "contents": [{"id": "sku-1", "item_brand_id": "b-9"}],
        }
    )
    validate_event(event, NOW)
    event["custom_data"]["external_measurement_vendor_id"] = "7"
    with pytest.raises(InvalidEvent):
        validate_event(event, NOW)


def test_validate_app_and_device_info_fields_against_their_published_rules() -> None:
    """Issue 25 part 2: the enums of device_info (API 5.28) and app_info's user agent length;
    other fields of these objects pass, their limits not being published to us."""
    event = valid_event(
        device_info={"form_factor": "tablet", "network_type": "wifi", "os_family": "ios",
                     "locale": "en_US"},
        app_info={"user_agent": "Mozilla/5.0", "app_package_name": "com.example"},
    )  # fmt: skip
    validate_event(event, NOW)
    for info, field, value in [
        ("device_info", "form_factor", "phablet"),
        ("device_info", "os_family", "iOS"),
        ("device_info", "network_type", 4),
        ("app_info", "user_agent", "u" * 16_385),
    ]:
        bad = valid_event()
        bad[info] = {field: value}
        with pytest.raises(InvalidEvent, match=f"{info}.{field}") as raised:
            validate_event(bad, NOW)
        assert raised.value.is_structural  # the whole request fails with a 400
