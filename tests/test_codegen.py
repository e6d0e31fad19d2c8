"""The generated rule functions (`codegen.py`) against the readable path they copy.

`Mapper.apply` runs each rule's generated function; `Mapper.apply_reference` applies the same
rule step by step through its closures. For rules that use every kind of value spec, consent
action, required-field form and format the generator writes inline (and some it leaves to the
closures), and for records whose fields hold anything a decoder can hand over, both must give
the same event (values, key order, dropped fields), the same skip, or the same error.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.conversion.codegen import compile_formatted_table, compile_table
from consumer.conversion.extract import compile_value
from consumer.conversion.formats import content_formatting, contents_formatting, custom_formatting
from consumer.conversion.mapping import Mapper
from consumer.conversion.rules import MappingRules, compile_mapping
from consumer.errors import PermanentError
from consumer.records import Conversion, Coordinates, Decoded, Envelope, Skip
from tests.test_fuzz_values import MAPPING as LOOSE
from tests.test_fuzz_values import TOPIC as LOOSE_TOPIC
from tests.test_fuzz_values import records as loose_records
from tests.test_fuzz_values import values

NOW_S = 1_800_000_000
EXAMPLE = compile_mapping(
    yaml.safe_load((Path(__file__).parent.parent / "schemas/mapping.example.yaml").read_text())
)
# Every value operator, the three consent actions, required fields read (not constant), a
# template event id, deep paths (the closures' `_walk`), arrays at the third level and beyond.
OPERATORS: dict[str, Any] = {
    "topic": "ops",
    "event_name": {"field": "kind", "map": {"a": "checkout", "b": "first_purchase"},
                   "default": "lead"},
    "action_source": {"field": "src", "default": "web"},
    "ad_account": {"field": "shop.account"},
    "event_id": "{id}:{event_name}",
    "event_time": {"field": "ts", "unit": "auto"},
    "filters": [{"reason": "flagged", "field": "flag", "exists": True},
                {"reason": "internal", "field": "shop.name", "matches": "^test"},
                {"reason": "kind", "field": "kind", "in": ["x", 1]},
                {"reason": "not_src", "field": "src", "not_in": ["web", "app_ios", None]},
                {"reason": "source", "field": "src", "equals": "shop"},
                {"reason": "q", "field": "q", "equals": "x"},
                {"reason": "not_ua", "field": "ua", "not_equals": None},
                {"reason": "deep", "field": "a.b.c.d[].n", "equals": [1]}],
    "user_data": {
        "em": {"first": ["a.email", "b.email"]},
        "external_id": {"template": "x-{id}"},
        "ph": {"const": "+16505551234"},
        "ct": {"field": "addr.city", "default": "paris"},
        "zp": "a.b.c.d",
        "fn": "deep.er.list[].name",
        "ln": "items[]",
        "st": {"field": "items[].state"},
    },
    "custom_data": {
        "num_items": {"count": "items[]"},
        "value": {"sum": "items[].price"},
        "predicted_ltv": {"sum": "a.b.c.d[].n"},
        "content_ids": "items[].sku",
        "search_string": {"field": "q", "map": {"1": "one", "True": "yes"}, "default": "none"},
        "content_name": {"field": "items[].name", "map": {"x": "y"}, "default": "n"},
        "currency": "cur",
        "order_id": {"field": "id"},
        "contents": {"each": "shop.items",
                     "fields": {"id": "sku", "item_price": "price", "quantity": "qty",
                                "item_name": "meta.name", "item_brand": {"const": "acme"},
                                "item_category": {"first": ["cat", "meta.cat"]}}},
    },
    "fields": {"opt_out": "oo", "event_source_url": "url", "partner_name": "partner",
               "device_info.os_family": "os", "app_info.user_agent": "ua", "wifi": "wifi"},
}  # fmt: skip
CONSENTS = [
    compile_mapping({"topics": [{**OPERATORS, "consent": {
        "field": "c", "denied_values": [False, "no"], "action": action}}]})
    for action in ("drop", "opt_out", "limited_data_processing")
]  # fmt: skip
NO_CONSENT = compile_mapping({"topics": [OPERATORS]})

leaves = st.one_of(
    values,
    st.sampled_from(["a", "b", "x", "1", "checkout", "web", "app_ios", "549755885175", "USD",
                     "eur", "ss-shop", "IOS", "test-shop", "ord-1", "Ann@Example.com"]),
    st.sampled_from([True, False, 1, 2, 2**64, Decimal("12.50"), 3.5, "no"]),
    st.sampled_from([NOW_S - 60, (NOW_S - 60) * 1000, NOW_S * 10**6, "2027-01-15T08:00:00Z",
                     NOW_S + 10**6, 0]),
    st.sampled_from([dt.datetime.fromtimestamp(NOW_S - 60, dt.UTC),  # the decoders' timestamps
                     dt.datetime.fromtimestamp(NOW_S - 60), dt.datetime.fromtimestamp(0, dt.UTC),
                     dt.datetime.fromtimestamp(NOW_S + 3600, dt.UTC), dt.date(1990, 3, 7)]),
)  # fmt: skip
KEYS = ["kind", "src", "id", "ts", "flag", "q", "cur", "c", "oo", "url", "partner", "os", "ua",
        "wifi", "name", "email", "city", "sku", "price", "qty", "state", "n", "cat", "account",
        "meta", "d", "items"]  # fmt: skip


def nested(depth: int) -> st.SearchStrategy[Any]:
    if depth == 0:
        return leaves
    inner = nested(depth - 1)
    objects = st.dictionaries(st.sampled_from([*KEYS, "a", "b", "c", "deep", "er", "list"]), inner)
    return st.one_of(leaves, objects, st.lists(st.one_of(inner, objects), max_size=3))


@st.composite
def operator_records(draw: Any) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for key in ["kind", "src", "id", "ts", "flag", "q", "cur", "c", "oo", "url", "partner", "os",
                "ua", "wifi", "shop", "a", "b", "addr", "deep", "items"]:  # fmt: skip
        if draw(st.integers(0, 2)):
            record[key] = draw(nested(3) if key in ("shop", "a", "b", "addr", "deep") else leaves)
    if draw(st.booleans()):
        record["ts"] = draw(st.sampled_from([NOW_S - 5, dt.datetime.fromtimestamp(NOW_S, dt.UTC)]))
        record["id"] = draw(st.sampled_from(["o-1", "o-2", 7]))
        record["shop"] = {"account": "549755885175", "items": draw(nested(2)), "name": "shop"}
        record.pop("flag", None)
        record["src"] = draw(st.sampled_from(["web", "app_ios", None, "shop"]))
        record["kind"] = draw(st.sampled_from(["a", "b", "zz", None, 1]))
        record["c"] = draw(st.sampled_from([True, False, "no", None]))
        record["partner"] = draw(st.sampled_from(["ss-shop", None]))
        record["ua"] = None
        record["oo"], record["wifi"] = draw(st.sampled_from([True, False, None])), None
        record["items"] = draw(
            st.lists(st.dictionaries(st.sampled_from(KEYS), leaves, max_size=5), max_size=3)
        )
    return record


@st.composite
def example_records(draw: Any) -> dict[str, Any]:
    """Records shaped like `order_event.v1` with any value in any field."""

    def field(good: Any) -> Any:
        return good if draw(st.integers(0, 9)) else draw(leaves)

    address = {"city": "Paris", "state": None, "postal_code": "75001", "country": "FR"}
    customer = {
        "email": field("ann@example.com"),
        "phone": field("+1 650 555 1234"),
        "first_name": field("Ann"),
        "last_name": field("Lee"),
        "customer_id": field("c-1"),
        "gender": field("F"),
        "address": field(address),
    }
    item = {
        "sku": "s",
        "name": "n",
        "brand": None,
        "category": "c",
        "unit_price": Decimal("1.50"),
        "quantity": 2,
    }
    items = st.one_of(st.just(item), st.dictionaries(st.sampled_from(list(item)), leaves))
    context = {"ip_address": "203.0.113.1", "user_agent": "ua", "page_url": "https://x"}
    return {
        "order_id": field("ord-1"),
        "event_type": draw(st.sampled_from(["ORDER_PLACED", "ORDER_PLACED", None])),
        "store_id": field("store-eu"), "channel": field("WEB"),
        "occurred_at": field(dt.datetime.fromtimestamp(NOW_S - 60, dt.UTC)),
        "customer": field(customer), "context": field(context),
        "items": draw(st.lists(items, max_size=3)),
        "currency": field("usd"), "total": field(Decimal("3.00")), "is_test": field(False),
        "consent": field({"ads_personalization": True}),
    }  # fmt: skip


def _ordered(value: Any) -> Any:
    """Dicts as lists of items, so key order counts too (it is the request's byte order)."""
    if isinstance(value, dict):
        return [(key, _ordered(item)) for key, item in value.items()]
    if isinstance(value, list):
        return [_ordered(item) for item in value]
    return value


def outcome(apply: Callable[[], Conversion | Skip]) -> tuple[Any, ...]:
    try:
        result = apply()
    except PermanentError as exc:
        return ("error", exc.reason, exc.detail)
    except Exception as exc:  # the build path makes it the record's failure (process.py)
        return ("raised", type(exc), str(exc))
    if isinstance(result, Skip):
        return ("skip", result)
    return ("event", result.coords, result.ad_account, result.event_id, result.event_time_s,
            result.event_name, _ordered(result.event), result.dropped, result.envelope)  # fmt: skip


def assert_same(
    mapping: MappingRules, topic: str, record: dict[str, Any], record_name: str = "R"
) -> None:
    generated, reference = Mapper(mapping), Mapper(mapping)
    decoded = Decoded(Envelope(Coordinates(topic, 0, 7), value=b""), record, record_name)
    rule = generated.rule_for(decoded)
    assert rule is reference.rule_for(decoded)
    for _ in range(2):  # twice: a custom event name counts on the first call only
        expected = (
            outcome(lambda: reference.apply_reference(rule, decoded, NOW_S))
            if rule is not None
            else ("skip", Skip(decoded.envelope.coords, "map.no_rule"))
        )
        assert outcome(lambda: generated.apply(rule, decoded, NOW_S)) == expected
    assert generated.custom_names_seen == reference.custom_names_seen


SETTINGS = settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@SETTINGS
@given(operator_records(), st.sampled_from([NO_CONSENT, *CONSENTS]))
def test_every_operator_and_consent_action_agrees_with_the_reference(
    record: dict[str, Any], mapping: MappingRules
) -> None:
    assert_same(mapping, "ops", record)


@SETTINGS
@given(loose_records())
def test_every_field_with_any_value_agrees_with_the_reference(record: dict[str, Any]) -> None:
    assert_same(LOOSE, LOOSE_TOPIC, record)


@SETTINGS
@given(example_records())
def test_the_example_mapping_agrees_with_the_reference(record: dict[str, Any]) -> None:
    assert_same(EXAMPLE, "shop.orders", record, "com.example.shop.orders.OrderEvent")


def test_the_generated_path_is_the_one_apply_runs() -> None:
    """`apply` must not quietly fall back to the reference: a rule's function is what runs."""
    mapping = compile_mapping({"topics": [{**OPERATORS, "consent": {"field": "c"}}]})
    (rule,) = mapping.rules
    calls: list[Any] = []

    def spy(record: Any, *args: Any) -> Skip:
        calls.append(record)
        return Skip(Coordinates("ops", 0, 0), "spy")

    object.__setattr__(rule, "apply", spy)
    decoded = Decoded(Envelope(Coordinates("ops", 0, 0), value=b""), {"x": 1}, "R")
    assert Mapper(mapping).apply(rule, decoded, NOW_S) == Skip(Coordinates("ops", 0, 0), "spy")
    assert calls == [{"x": 1}]


@pytest.mark.parametrize(
    ("spec", "record"),
    [
        ({"sum": "items[].q"}, {"items": [{"q": 1}, {"q": 2.0}, {"q": Decimal(3)}]}),
        ({"sum": "items[].q"}, {"items": [{"q": 1}, {"q": 2}]}),
        ({"sum": "items[].q"}, {"items": "no"}),
        ({"field": "k", "map": {"1": "one"}, "default": "d"}, {"k": 1}),
        ({"field": "k", "map": {"1": "one"}, "default": "d"}, {"k": 2}),
        ({"field": "k", "map": {"1": "one"}, "default": "d"}, {}),
        ({"field": "a.b", "default": 0}, {"a": {"b": None}}),
        ({"field": "a[].b", "default": 0}, {"a": []}),
    ],
)
def test_an_inline_value_reads_what_its_closure_reads(spec: Any, record: dict[str, Any]) -> None:
    """One table per spec, generated, against its own closure called directly."""
    closure = compile_value(spec, "k")
    table = compile_table([("x", spec, closure)])
    expected = closure(record)
    assert table(record) == ({} if expected in (None, []) else {"x": expected})


def test_contents_built_inline_match_their_item_table() -> None:
    names = ["id", "item_price", "quantity"]
    entries = [(n, n, compile_value(n, n)) for n in names]
    formatting = [content_formatting(n) for n in names]
    contents = contents_formatting(entries, formatting)
    rows = [{"id": "a", "item_price": Decimal("1.50"), "quantity": 2}, {"quantity": 2**70}, "x",
            {"item_price": float("nan")}, {"id": 5, "item_price": "2"}]  # fmt: skip
    inline = compile_formatted_table([("contents", "rows", compile_value("rows", "k"))], [contents])
    dropped: list[tuple[str, str]] = []
    by_closure: list[tuple[str, str]] = []
    assert inline({"rows": rows}, dropped) == {"contents": contents.format(rows, by_closure)}
    assert dropped == by_closure == [("custom_data.contents.quantity", "invalid"),
                                     ("custom_data.contents.item_price", "invalid")]  # fmt: skip
    over = [{"id": "a"}] * 1001
    dropped.clear()
    assert inline({"rows": over}, dropped) == {}
    assert dropped == [("custom_data.contents", "too_long")]
    assert custom_formatting("num_items").inline == "integer"


@pytest.mark.parametrize(
    "required",
    [
        {"ad_account": "1" * 1001},  # a constant past the limit: every event fails, as it says
        {"event_name": "my_custom_event"},  # a custom constant counts each time
        {"event_name": {"const": "lead"}, "action_source": {"template": "{src}"}},
    ],
)
def test_required_constants_and_closures_agree_with_the_reference(
    required: dict[str, Any],
) -> None:
    rule = {**OPERATORS, "filters": [], **required}
    mapping = compile_mapping({"topics": [rule]})
    record = {"id": "o-1", "ts": NOW_S, "src": "web", "shop": {"account": "549755885175"}}
    assert_same(mapping, "ops", record)
    assert_same(mapping, "ops", {**record, "src": "nope"})
