from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.conversion.capi import CONTENT_FIELDS, CUSTOM_FIELDS, TOP_FIELD_NAMES
from consumer.conversion.codegen import compile_formatted_table, compile_table
from consumer.conversion.extract import compile_path
from consumer.conversion.formats import (
    content_formatting,
    custom_formatting,
    field_formatting,
    normalize_currency,
)
from consumer.conversion.mapping import Mapper
from consumer.conversion.rules import compile_mapping
from consumer.conversion.values import OutOfBounds
from consumer.errors import PermanentError
from consumer.records import Conversion, Coordinates, Decoded, Envelope

RULE: dict[str, Any] = {"topic": "t", "event_name": "lead", "action_source": "web",
                        "ad_account": "1", "event_id": "{a}", "event_time": "t"}  # fmt: skip
NOW_S = 1_700_000_000


def format_custom_data(raw: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """`raw`'s fields through a rule's custom_data that reads each from the record as it is
    (contents: every item field), and what it left out."""
    spec: dict[str, Any] = {key: key for key in raw if key != "contents"}
    if "contents" in raw:
        fields = {name: name for name in sorted(CONTENT_FIELDS)}
        spec["contents"] = {"each": "contents", "fields": fields}
    mapper = Mapper(compile_mapping({"topics": [{**RULE, "custom_data": spec}]}))
    record = {"a": "o1", "t": NOW_S, **raw}
    built = mapper.map(Decoded(Envelope(Coordinates("t", 0, 0), value=b""), record), NOW_S)
    assert isinstance(built, Conversion)
    return built.event.get("custom_data", {}), list(built.dropped)


def test_currency_is_an_iso_code_or_out_of_bounds() -> None:
    assert normalize_currency(" usd ") == "USD"
    for bad in ("XYZ", "usdollar", "\uff35\uff33\uff24"):  # full-width USD
        with pytest.raises(OutOfBounds):
            normalize_currency(bad)


def test_custom_data_is_read_in_the_api_types() -> None:
    custom, dropped = format_custom_data(
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
    custom, dropped = format_custom_data(
        {
            "value": "1e999999999",
            "predicted_ltv": float("nan"),
            "currency": "dollars",
            "num_items": 10**25,
            "content_ids": ["ok", b"\xc3(", True, "x"],
            "contents": [
                {"id": "a", "quantity": "²", "item_price": "٣"},
                {"id": "b", "quantity": 2**70},
                "not an item",  # not an object: no item, nothing to say
                {"item_name": None},  # no field: no item
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
        ("custom_data.search_string", "too_long"),
    ])  # fmt: skip


def test_arrays_over_the_limit_are_left_out_whole_before_any_item_is_built() -> None:
    _, dropped = format_custom_data({"content_ids": ["a"] * 1001})
    assert dropped == [("custom_data.content_ids", "too_long")]
    custom, dropped = format_custom_data({"contents": [{"id": "a"}] * 1001, "order_id": "o"})
    assert custom == {"order_id": "o"}
    assert dropped == [("custom_data.contents", "too_long")]
    custom, _ = format_custom_data({"contents": [{"id": "a"}] * 1000})
    assert len(custom["contents"]) == 1000


def test_the_5_28_custom_data_fields_in_their_types() -> None:
    custom, dropped = format_custom_data(
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


raw_values: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["usd", " EUR ", "9.99", "²", "1e999999999", "s" * 16_385, "-0", ""]),
    st.binary(max_size=8),
    st.lists(st.one_of(st.none(), st.text(max_size=4), st.integers(), st.booleans()), max_size=4),
)


FIELD_SETS = {
    "custom": sorted(CUSTOM_FIELDS - {"contents"}),
    "content": sorted(CONTENT_FIELDS),
    "field": sorted(TOP_FIELD_NAMES),
}
FORMATTING = {"custom": custom_formatting, "content": content_formatting, "field": field_formatting}


def format_one_by_one(
    names: list[str], paths: list[str], record: dict[str, Any], kind: str
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The reference: the plain table's values, then each through its field's format."""
    entries = [(n, p, compile_path(p, "k")) for n, p in zip(names, paths, strict=True)]
    out: dict[str, Any] = {}
    dropped: list[tuple[str, str]] = []
    for name, value in compile_table(entries)(record).items():
        formatting = FORMATTING[kind](name)
        try:
            formatted = formatting.format(value, dropped)
        except OutOfBounds as exc:
            dropped.append((formatting.drop_name, exc.reason))
            continue
        if formatted is not None:
            out[name] = formatted
    return out, dropped


def outcome(build: Callable[[], object]) -> object:
    """What `build` gives, or the reason of the `PermanentError` it raises."""
    try:
        return build()
    except PermanentError as exc:
        return exc.reason


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(sorted(FIELD_SETS)), st.data())
def test_the_generated_formatted_table_agrees_with_each_format_applied_alone(
    kind: str, data: st.DataObject
) -> None:
    """The inline text path and the generated try/except give what the formats give, and
    fail the event where they do (a text for `opt_out`, a malformed `partner_name`)."""
    names = data.draw(
        st.lists(st.sampled_from(FIELD_SETS[kind]), min_size=1, max_size=6, unique=True)
    )
    record = {name.replace(".", "_"): data.draw(raw_values) for name in names}
    paths = [name.replace(".", "_") for name in names]
    table = compile_formatted_table(
        [(n, p, compile_path(p, "k")) for n, p in zip(names, paths, strict=True)],
        [FORMATTING[kind](n) for n in names],
    )

    def generated() -> object:
        dropped: list[tuple[str, str]] = []
        return table(record, dropped), dropped

    def reference() -> object:
        return format_one_by_one(names, paths, record, kind)

    assert outcome(generated) == outcome(reference)


def test_top_level_fields_are_formatted_and_info_fields_nested() -> None:
    mapper = Mapper(
        compile_mapping(
            {
                "topics": [
                    {
                        **RULE,
                        "fields": {
                            "language": "lang",
                            "device_info.os_family": "os",
                            "event_source_url": "url",
                            "app_info.user_agent": "app",
                            "wifi": "wifi",
                        },
                    }
                ]
            }
        )
    )
    record = {"a": "o1", "t": NOW_S, "lang": 7, "os": " iOS ", "url": b"u" * 16_385, "app": "A"}
    built = mapper.map(Decoded(Envelope(Coordinates("t", 0, 0), value=b""), record), NOW_S)
    assert isinstance(built, Conversion)
    event = {k: v for k, v in built.event.items() if k not in ("user_data", "event_time")}
    assert event == {
        "event_name": "lead",
        "action_source": "web",
        "event_id": "o1",
        "language": "7",
        "device_info": {"os_family": "ios"},
        "app_info": {"user_agent": "A"},
    }
    assert built.dropped == (("event_source_url", "too_long"),)
    with pytest.raises(PermanentError, match="wifi must be a boolean"):
        mapper.map(
            Decoded(Envelope(Coordinates("t", 0, 1), value=b""), {**record, "wifi": "yes"}),
            NOW_S,
        )
