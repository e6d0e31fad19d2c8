"""The normalize stage: user_data hashed through `conversion.userdata`, custom_data formatted.

Pure functions: `normalize_conversion` takes a mapped `Conversion` with raw values and returns one
ready to send, with the user_data and custom_data fields it had to leave out (and why) on
`Conversion.dropped`. Whether a value fits a field is `conversion.values`.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import pycountry

from consumer.conversion.capi import (
    CONTENT_FIELDS,
    CUSTOM_FIELDS,
    CUSTOM_INTEGER_FIELDS,
    MISSING_IDENTIFIER,
    has_required_identifier,
)
from consumer.conversion.hashing import UserDataHasher
from consumer.conversion.userdata import NormalizeOptions
from consumer.conversion.values import (
    MAX_TEXT_CHARS,
    OutOfBounds,
    decimal_text,
    integer,
    items,
    text,
)
from consumer.errors import PermanentError
from consumer.records import Conversion


@lru_cache(maxsize=256)
def normalize_currency(value: str) -> str:
    """An ISO-4217 code in capitals; `OutOfBounds("invalid")` for anything else."""
    code = value.strip().upper()
    if len(code) != 3 or not code.isascii() or pycountry.currencies.get(alpha_3=code) is None:
        raise OutOfBounds("invalid")
    return code


def _normalize_contents(contents: list[object], dropped: list[tuple[str, str]]) -> list[Any]:
    # Field names for the dropped list are constants: formatting one per value cost more than
    # the normalization itself.
    out = []
    for content in contents:
        if type(content) is not dict:
            dropped.append(("custom_data.contents", "wrong_type"))
            continue
        item: dict[str, Any] = {}
        for key, value in content.items():
            if value is None:
                continue
            try:
                if key == "item_price":
                    item[key] = decimal_text(value)
                elif key == "quantity":
                    item[key] = integer(value)
                elif type(value) is str and len(value) <= MAX_TEXT_CHARS:  # most item fields
                    item[key] = value
                else:
                    item[key] = text(value)
            except OutOfBounds as exc:
                dropped.append((_CONTENT_NAMES.get(key, "custom_data.contents"), exc.reason))
        if item:
            out.append(item)
    return out


_CONTENT_NAMES = {k: f"custom_data.contents.{k}" for k in CONTENT_FIELDS}
_CUSTOM_NAMES = {k: f"custom_data.{k}" for k in CUSTOM_FIELDS}


def normalize_custom_data(raw: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """custom_data in the API's types, and the fields (or items) left out, with why. Every
    custom_data field is optional: a value that does not fit is left out, not the event."""
    custom: dict[str, Any] = {}
    dropped: list[tuple[str, str]] = []
    for key, value in raw.items():
        if value is None:
            continue
        try:
            if key in ("value", "predicted_ltv"):
                custom[key] = decimal_text(value)
            elif key == "currency":
                custom[key] = normalize_currency(text(value, 16))
            elif key in CUSTOM_INTEGER_FIELDS:
                custom[key] = integer(value)
            elif key == "content_ids":
                ids = []
                for item in items(value):
                    try:
                        if type(item) is str and len(item) <= MAX_TEXT_CHARS:
                            ids.append(item)
                        elif item is not None:
                            ids.append(text(item))
                    except OutOfBounds as exc:
                        dropped.append(("custom_data.content_ids", exc.reason))
                if ids:
                    custom[key] = ids
            elif key == "contents":
                if contents := _normalize_contents(items(value), dropped):
                    custom[key] = contents
            elif type(value) is str and len(value) <= MAX_TEXT_CHARS:
                custom[key] = value
            else:
                custom[key] = text(value)
        except OutOfBounds as exc:
            dropped.append((_CUSTOM_NAMES.get(key, "custom_data"), exc.reason))
    return custom, dropped


def normalize_conversion(conversion: Conversion, hasher: UserDataHasher) -> Conversion:
    """Hash user_data and format custom_data. Raises `PermanentError` naming the field."""
    event = dict(conversion.event)
    event["user_data"], hashed_dropped = hasher.hash_user_data(event.get("user_data", {}))
    dropped: tuple[tuple[str, str], ...] = hashed_dropped
    if conversion.dropped:  # top-level fields the mapping left out
        dropped = (*conversion.dropped, *hashed_dropped)
    if not has_required_identifier(event["user_data"]):
        raise PermanentError("validate.invalid_event", MISSING_IDENTIFIER)
    if "custom_data" in event:
        custom, left_out = normalize_custom_data(event["custom_data"])
        if custom:
            event["custom_data"] = custom
        else:
            del event["custom_data"]
        if left_out:
            dropped = (*dropped, *left_out)
    # Built directly: dataclasses.replace introspects the fields on every call (~2% of CPU).
    return Conversion(
        conversion.coords,
        conversion.ad_account,
        conversion.event_id,
        conversion.event_time_s,
        conversion.event_name,
        event,
        conversion.envelope,
        conversion.span_context,
        dropped,
    )


__all__ = ["NormalizeOptions", "UserDataHasher", "normalize_conversion"]
