"""The normalize stage: user_data hashed through `conversion.userdata`, custom_data formatted.

Pure functions: `normalize_conversion` takes a mapped `Conversion` with raw values and returns one
ready to send, with the user_data fields it had to leave out (and why) on `Conversion.dropped`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

import pycountry

from consumer.conversion.capi import MISSING_IDENTIFIER, has_required_identifier
from consumer.conversion.userdata import NormalizeOptions, UserDataHasher
from consumer.errors import PermanentError
from consumer.records import Conversion


def format_decimal(value: object, field: str) -> str:
    """A money-like value as a plain decimal string without float artefacts or exponents."""
    if isinstance(value, bool):
        raise PermanentError("normalize.wrong_type", f"{field} must be a number, not a boolean")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise PermanentError("normalize.not_finite", f"{field} must be a finite number")
        number = Decimal(repr(value))  # repr is the shortest round-trip form: 72.39, not 72.38999
    elif type(value) is Decimal:  # Avro decimals: already exact
        number = value
    elif isinstance(value, int | Decimal):
        number = Decimal(value)
    elif isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            raise PermanentError("normalize.not_a_number", f"{field} is not a number") from None
    else:
        raise PermanentError("normalize.wrong_type", f"{field} must be a number or string")
    if not number.is_finite():
        raise PermanentError("normalize.not_finite", f"{field} must be a finite number")
    text = format(number, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


@lru_cache(maxsize=256)
def normalize_currency(value: str) -> str:
    code = value.strip().upper()
    if pycountry.currencies.get(alpha_3=code) is None:
        raise PermanentError("normalize.bad_currency", "custom_data.currency is not ISO-4217")
    return code


def format_int(value: object, field: str) -> int:
    if isinstance(value, bool):
        raise PermanentError("normalize.wrong_type", f"{field} must be an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    raise PermanentError("normalize.wrong_type", f"{field} must be an integer")


def _string(value: object) -> str:
    return value if isinstance(value, str) else str(value)


def _normalize_contents(contents: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    # Field names for error details are constants: formatting one per value cost more than
    # the normalization itself.
    out = []
    for content in contents:
        item: dict[str, Any] = {}
        for key, value in content.items():
            if value is None:
                continue
            if key == "item_price":
                item[key] = format_decimal(value, "custom_data.contents[].item_price")
            elif key == "quantity":
                item[key] = format_int(value, "custom_data.contents[].quantity")
            else:
                item[key] = _string(value)
        out.append(item)
    return out


_CUSTOM_NAMES = {"value": "custom_data.value", "predicted_ltv": "custom_data.predicted_ltv"}


def normalize_custom_data(raw: dict[str, Any]) -> dict[str, Any]:
    custom: dict[str, Any] = {}
    for key, value in raw.items():
        if value is None:
            continue
        if key in ("value", "predicted_ltv"):
            custom[key] = format_decimal(value, _CUSTOM_NAMES[key])
        elif key == "currency":
            custom[key] = normalize_currency(_string(value))
        elif key == "num_items":
            custom[key] = format_int(value, "custom_data.num_items")
        elif key == "content_ids":
            ids = value if isinstance(value, list) else [value]
            custom[key] = [_string(v) for v in ids if v is not None]
        elif key == "contents":
            custom[key] = _normalize_contents(value)
        else:
            custom[key] = _string(value)
    return custom


def normalize_conversion(conversion: Conversion, hasher: UserDataHasher) -> Conversion:
    """Hash user_data and format custom_data. Raises `PermanentError` naming the field."""
    event = dict(conversion.event)
    event["user_data"], dropped = hasher.hash_user_data(event.get("user_data", {}))
    if not has_required_identifier(event["user_data"]):
        raise PermanentError("validate.invalid_event", MISSING_IDENTIFIER)
    if "custom_data" in event:
        custom = normalize_custom_data(event["custom_data"])
        if custom:
            event["custom_data"] = custom
        else:
            del event["custom_data"]
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
