"""Pinterest Conversions API v5 wire types and the closed-schema check for one event.

Shared by the pre-send validation and the local sandbox so both read the spec from one place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final, Literal

from consumer.conversion.userdata import RAW_USER_FIELDS, USER_FIELDS, is_hex_digest
from consumer.conversion.values import MAX_TEXT_CHARS

EventName = Literal[
    "add_payment_info", "add_to_cart", "add_to_wishlist", "app_install", "app_open",
    "checkout", "contact", "custom", "customize_product", "find_location",
    "initiate_checkout", "lead", "page_visit", "schedule", "search", "signup",
    "start_trial", "submit_application", "subscribe", "view_category", "view_content",
    "watch_video",
]  # fmt: skip
ActionSource = Literal["web", "app_android", "app_ios", "offline"]

EVENT_NAMES: Final = frozenset(EventName.__args__)  # type: ignore[attr-defined]
# Advertiser-defined ("custom") event names: up to 100 letters, digits, `_` and `-`, compared
# case-insensitively by Pinterest, up to 15 per advertiser, each mapped to a standard event in
# Ads Manager (which is where they must exist first).
CUSTOM_EVENT_NAME: Final = re.compile(r"[A-Za-z0-9_-]{1,100}")
EVENT_NAME_RULE: Final = (
    "a standard event name or a custom one of up to 100 letters, digits, _ or -"
)
ACTION_SOURCES: Final = frozenset(ActionSource.__args__)  # type: ignore[attr-defined]
MAX_EVENTS_PER_REQUEST: Final = 1000
MAX_EVENT_AGE_S: Final = 7 * 86400  # the API refuses events older than 7 days


CUSTOM_STRING_FIELDS: Final = frozenset(
    {"value", "currency", "order_id", "search_string", "content_name", "content_category",
     "content_brand", "predicted_ltv", "opt_out_type",
     # for partners and measurement vendors (np: a partner tag, `ss-<name>` for integrations)
     "np", "external_measurement_id"}
)  # fmt: skip
CUSTOM_INTEGER_FIELDS: Final = frozenset({"num_items", "external_measurement_vendor_id"})
CUSTOM_FIELDS: Final = CUSTOM_STRING_FIELDS | CUSTOM_INTEGER_FIELDS | {"content_ids", "contents"}
CONTENT_STRING_FIELDS: Final = frozenset(
    {"id", "item_price", "item_name", "item_category", "item_brand", "item_brand_id"}  # 5.28
)
CONTENT_FIELDS: Final = CONTENT_STRING_FIELDS | {"quantity"}

TOP_STRING_FIELDS: Final = frozenset(
    {"event_source_url", "partner_name", "language", "app_id", "app_name", "app_version",
     "device_brand", "device_carrier", "device_model", "device_type", "os_version"}
)  # fmt: skip
TOP_BOOL_FIELDS: Final = frozenset({"opt_out", "wifi"})
INFO_OBJECTS: Final = frozenset({"app_info", "device_info"})  # their fields: `INFO_FIELDS`
TOP_FIELDS: Final = (
    TOP_STRING_FIELDS
    | TOP_BOOL_FIELDS
    | INFO_OBJECTS
    | {"event_name", "action_source", "event_time", "event_id", "user_data", "custom_data"}
)


@dataclass(frozen=True, slots=True)
class InfoField:
    """One field inside `app_info` or `device_info`: its allowed values (an enum), or its
    longest text. A value that breaks it fails the whole request with a 400."""

    values: frozenset[str] | None = None
    max_chars: int | None = None


# The fields of app_info and device_info whose names and rules Pinterest publishes: the enums
# of FormFactor, NetworkType and OsFamily (API changelog 5.23 to 5.28) and the user agent's
# length (16,384). The objects hold more (an app's package name, store and install time; a
# device's languages, locale, screen, storage and timezone), each with a limit the fact sheet
# does not give: those are not mappable until it does, rather than checked against a guess.
# Keyed `object.field`, as the mapping's `fields` names them.
INFO_FIELDS: Final[dict[str, InfoField]] = {
    "device_info.form_factor": InfoField(
        frozenset({"cellphone", "console", "desktop", "laptop", "other", "smartwatch",
                   "tablet", "tv", "vr"})
    ),
    "device_info.network_type": InfoField(
        frozenset({"cellular_2g", "cellular_3g", "cellular_4g", "cellular_5g", "cellular_6g",
                   "ethernet", "unknown", "wifi"})
    ),
    "device_info.os_family": InfoField(
        frozenset({"android", "bsd", "ios", "linux", "macos", "other", "windows"})
    ),
    "app_info.user_agent": InfoField(max_chars=MAX_TEXT_CHARS),  # the spec's 16,384
}  # fmt: skip
# What a mapping rule's `fields` may set: top-level fields, and the app_info/device_info ones.
TOP_FIELD_NAMES: Final = TOP_STRING_FIELDS | TOP_BOOL_FIELDS | frozenset(INFO_FIELDS)

_DECIMAL = re.compile(r"-?\d+(\.\d+)?")
PARTNER_NAME = re.compile(r"ss-[a-z0-9_.-]+")


def is_event_name(name: str) -> bool:
    """A standard event name, or one an advertiser may define (`CUSTOM_EVENT_NAME`)."""
    return name in EVENT_NAMES or CUSTOM_EVENT_NAME.fullmatch(name) is not None


def is_custom_event_name(name: str) -> bool:
    return name not in EVENT_NAMES and CUSTOM_EVENT_NAME.fullmatch(name) is not None


class InvalidEvent(ValueError):
    """An event breaks the API's schema; the message names the field.

    `is_structural` marks schema violations (unknown keys, wrong types, missing required keys),
    which the live API answers with a 400 for the whole request rather than per event.
    """

    def __init__(self, message: str, is_structural: bool = False) -> None:
        super().__init__(message)
        self.is_structural = is_structural


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_string(value: object, name: str) -> None:
    if type(value) is not str:
        raise InvalidEvent(f"{name} must be a string, got {type(value).__name__}", True)


def _check_decimal_string(value: object, name: str) -> None:
    _check_string(value, name)
    assert isinstance(value, str)
    if _DECIMAL.fullmatch(value) is None:
        raise InvalidEvent(f'{name} must be a decimal string such as "72.39"')


MISSING_IDENTIFIER: Final = (
    "user_data needs em, hashed_maids, or both client_ip_address and client_user_agent"
)


def has_required_identifier(user_data: dict[str, Any]) -> bool:
    """The API refuses an event whose user_data carries none of these."""
    return (
        "em" in user_data
        or "hashed_maids" in user_data
        or ("client_ip_address" in user_data and "client_user_agent" in user_data)
    )


def _check_user_data(user_data: object) -> None:
    if not isinstance(user_data, dict):
        raise InvalidEvent("user_data must be an object", True)
    for key, value in user_data.items():
        name = f"user_data.{key}"
        if key not in USER_FIELDS:
            raise InvalidEvent(f"{name} is not a known field", True)
        if key in RAW_USER_FIELDS:
            _check_string(value, name)
            continue
        if not isinstance(value, list):
            raise InvalidEvent(f"{name} must be an array of SHA-256 hex digests", True)
        if not value:
            raise InvalidEvent(f"{name} must not be empty")
        for item in value:
            if not isinstance(item, str) or not is_hex_digest(item):
                raise InvalidEvent(f"{name} must hold lowercase SHA-256 hex digests")
    if not has_required_identifier(user_data):
        raise InvalidEvent(MISSING_IDENTIFIER)


def _check_contents(contents: object) -> None:
    if not isinstance(contents, list):
        raise InvalidEvent("custom_data.contents must be an array", True)
    for i, content in enumerate(contents):
        name = f"custom_data.contents[{i}]"
        if not isinstance(content, dict):
            raise InvalidEvent(f"{name} must be an object", True)
        for key, value in content.items():
            if key not in CONTENT_FIELDS:
                raise InvalidEvent(f"{name}.{key} is not a known field", True)
            if key == "quantity":
                if not _is_int(value):
                    raise InvalidEvent(f"{name}.quantity must be an integer", True)
            elif key == "item_price":
                _check_decimal_string(value, f"{name}.item_price")
            else:
                _check_string(value, f"{name}.{key}")


def _check_custom_data(custom_data: object) -> None:
    if not isinstance(custom_data, dict):
        raise InvalidEvent("custom_data must be an object", True)
    for key, value in custom_data.items():
        name = f"custom_data.{key}"
        if key not in CUSTOM_FIELDS:
            raise InvalidEvent(f"{name} is not a known field", True)
        if key in ("value", "predicted_ltv"):
            _check_decimal_string(value, name)
        elif key == "currency":
            _check_string(value, name)
            assert isinstance(value, str)
            if len(value) != 3 or not value.isascii() or not value.isupper():
                raise InvalidEvent(f"{name} must be an ISO-4217 code such as USD")
        elif key in CUSTOM_STRING_FIELDS:
            _check_string(value, name)
        elif key in CUSTOM_INTEGER_FIELDS:
            if not _is_int(value):
                raise InvalidEvent(f"{name} must be an integer", True)
        elif key == "content_ids":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise InvalidEvent(f"{name} must be an array of strings", True)
        else:
            _check_contents(value)


def validate_event(event: object, now_s: int, future_skew_s: int = 60) -> None:
    """Raise `InvalidEvent` naming the first field that breaks the closed event schema."""
    if not isinstance(event, dict):
        raise InvalidEvent("event must be an object", True)
    for key in ("event_name", "action_source", "event_time", "event_id", "user_data"):
        if key not in event:
            raise InvalidEvent(f"{key} is required", True)
    for key in event:
        if key not in TOP_FIELDS:
            raise InvalidEvent(f"{key} is not a known field", True)
    if not isinstance(event["event_name"], str) or not is_event_name(event["event_name"]):
        raise InvalidEvent(f"event_name {event['event_name']!r} is not {EVENT_NAME_RULE}")
    if event["action_source"] not in ACTION_SOURCES:
        raise InvalidEvent(f"action_source {event['action_source']!r} is not an allowed value")
    event_time = event["event_time"]
    if not _is_int(event_time):
        raise InvalidEvent("event_time must be an integer of Unix seconds", True)
    if event_time > now_s + future_skew_s:
        raise InvalidEvent("event_time is in the future (milliseconds sent as seconds?)")
    event_id = event["event_id"]
    if not isinstance(event_id, str) or not event_id:
        raise InvalidEvent("event_id must be a non-empty string")
    _check_user_data(event["user_data"])
    if "custom_data" in event:
        _check_custom_data(event["custom_data"])
    for key in TOP_STRING_FIELDS.intersection(event):
        _check_string(event[key], key)
    if "partner_name" in event and not PARTNER_NAME.fullmatch(event["partner_name"]):
        raise InvalidEvent("partner_name must look like ss-<name>, lowercase")
    for key in TOP_BOOL_FIELDS.intersection(event):
        if not isinstance(event[key], bool):
            raise InvalidEvent(f"{key} must be a boolean", True)
    for key in INFO_OBJECTS.intersection(event):
        _check_info(event[key], key)


def _check_info(info: object, key: str) -> None:
    """`app_info` or `device_info`: the fields of `INFO_FIELDS` against their rules. Other
    fields pass unchecked: the published spec names them without their limits."""
    if not isinstance(info, dict):
        raise InvalidEvent(f"{key} must be an object", True)
    for field_name, value in info.items():
        name = f"{key}.{field_name}"
        rule = INFO_FIELDS.get(name)
        if rule is None:
            continue
        _check_string(value, name)
        if rule.values is not None and value not in rule.values:
            raise InvalidEvent(f"{name} must be one of {sorted(rule.values)}", True)
        if rule.max_chars is not None and len(value) > rule.max_chars:
            raise InvalidEvent(f"{name} is over {rule.max_chars} characters", True)
