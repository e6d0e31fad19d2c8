"""Optional fields in the API's types, formatted as a rule reads them (pure).

Each custom_data and top-level field has one format: money as a plain decimal string, counts as
64-bit integers, the currency as an ISO-4217 code, arrays within their limits, app_info and
device_info values by their rule (`capi.INFO_FIELDS`), booleans where booleans go, everything
else as text. A value that does not fit is left out, not the event, and named with its reason on
`Conversion.dropped`; only a value that cannot be meant (a text where `opt_out` wants a boolean,
a malformed `partner_name`) fails the event. `rules.py` compiles a rule's custom_data and fields
with these formats into the tables that read them (`codegen.compile_formatted_table`), so each
value is read and formatted in one step: reading the dict and then formatting it again cost 7 µs
per order. Change how a field is formatted here; whether a value fits is `values.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import pycountry

from consumer.conversion.capi import (
    CUSTOM_INTEGER_FIELDS,
    INFO_FIELDS,
    PARTNER_NAME,
    TOP_BOOL_FIELDS,
)
from consumer.conversion.codegen import compile_formatted_table
from consumer.conversion.extract import Dropped, Entry, Format, Formatting
from consumer.conversion.values import (
    MAX_TEXT_CHARS,
    OutOfBounds,
    decimal_text,
    integer,
    items,
    text,
)
from consumer.errors import PermanentError

CONTENT_IDS = "custom_data.content_ids"


@lru_cache(maxsize=256)
def normalize_currency(value: str) -> str:
    """An ISO-4217 code in capitals; `OutOfBounds("invalid")` for anything else."""
    code = value.strip().upper()
    if len(code) != 3 or not code.isascii() or pycountry.currencies.get(alpha_3=code) is None:
        raise OutOfBounds("invalid")
    return code


def _as_text(value: object, dropped: Dropped) -> str:
    return text(value)


def _as_decimal(value: object, dropped: Dropped) -> str:
    return decimal_text(value)


def _as_integer(value: object, dropped: Dropped) -> int:
    return integer(value)


def _as_currency(value: object, dropped: Dropped) -> str:
    return normalize_currency(text(value, 16))


def _as_content_ids(value: object, dropped: Dropped) -> list[str] | None:
    """Each id as text; an id that does not fit is left out alone, the array over `MAX_ITEMS`
    as a whole."""
    ids = []
    for item in items(value):
        if type(item) is str and len(item) <= MAX_TEXT_CHARS:
            ids.append(item)
        elif item is not None:
            try:
                ids.append(text(item))
            except OutOfBounds as exc:
                dropped.append((CONTENT_IDS, exc.reason))
    return ids or None


def custom_formatting(name: str) -> Formatting:
    """How the custom_data field `name` is formatted (not `contents`: `contents_formatting`)."""
    drop_name = f"custom_data.{name}"
    if name in ("value", "predicted_ltv"):
        return Formatting(_as_decimal, drop_name, inline="decimal")
    if name == "currency":
        return Formatting(_as_currency, drop_name)
    if name in CUSTOM_INTEGER_FIELDS:
        return Formatting(_as_integer, drop_name, inline="integer")
    if name == "content_ids":
        return Formatting(_as_content_ids, drop_name, inline="texts")
    return Formatting(_as_text, drop_name, text_as_is=True)


def content_formatting(name: str) -> Formatting:
    """How the field `name` of one `contents` item is formatted."""
    drop_name = f"custom_data.contents.{name}"
    if name == "item_price":
        return Formatting(_as_decimal, drop_name, inline="decimal")
    if name == "quantity":
        return Formatting(_as_integer, drop_name, inline="integer")
    return Formatting(_as_text, drop_name, text_as_is=True)


def contents_formatting(entries: Sequence[Entry], formatting: Sequence[Formatting]) -> Formatting:
    """`contents`: each object of the array the rule names (`each`) becomes an item through
    the table of `entries` (`content_formatting` each); items with no field left are left out.
    More than `MAX_ITEMS` objects leave out the whole array (counted before any is built: one
    record never builds megabytes)."""
    item_table = compile_formatted_table(entries, formatting)

    def as_contents(value: object, dropped: Dropped) -> list[dict[str, Any]] | None:
        out = []
        for row in items(value):
            if type(row) is dict and (item := item_table(row, dropped)):
                out.append(item)
        return out or None

    return Formatting(as_contents, "custom_data.contents", rows=(tuple(entries), tuple(formatting)))


def _as_partner_name(value: object, dropped: Dropped) -> str:
    out = text(value)
    if PARTNER_NAME.fullmatch(out) is None:
        raise PermanentError("map.bad_partner_name", "partner_name must look like ss-<name>")
    return out


def _boolean(name: str) -> Format:
    def as_boolean(value: object, dropped: Dropped) -> bool:
        if type(value) is not bool:
            raise PermanentError("map.wrong_type", f"{name} must be a boolean")
        return value

    return as_boolean


def _info(name: str) -> Format:
    """A field of app_info or device_info, by its rule in `INFO_FIELDS`: enum values compared
    trimmed and lowercased ("Desktop " is desktop). Inside these objects a bad value fails the
    whole request, so only this field is left out."""
    rule = INFO_FIELDS[name]
    limit = rule.max_chars or MAX_TEXT_CHARS

    def as_info(value: object, dropped: Dropped) -> str:
        out = text(value, limit)
        if rule.values is not None:
            out = out.strip().lower()
            if out not in rule.values:
                raise OutOfBounds("invalid")
        return out

    return as_info


def field_formatting(name: str) -> Formatting:
    """How the top-level field `name` (a rule's `fields`) is formatted; app_info and device_info
    fields are named `app_info.<field>`, and the mapper nests them."""
    if name in TOP_BOOL_FIELDS:
        return Formatting(_boolean(name), name)
    if name == "partner_name":
        return Formatting(_as_partner_name, name)
    if name in INFO_FIELDS:
        return Formatting(_info(name), name)
    return Formatting(_as_text, name, text_as_is=True)
