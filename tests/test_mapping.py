from __future__ import annotations

import datetime as dt
import json
import random
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from consumer.conversion.mapping import Mapper
from consumer.conversion.mapping_schema import mapping_json_schema
from consumer.conversion.required import event_time_seconds
from consumer.conversion.rules import MappingRules, compile_mapping
from consumer.errors import ConfigError, PermanentError
from consumer.records import Conversion, Coordinates, Decoded, Envelope, Skip
from devenv.samples import engagement_record
from tests.conftest import placed_order

EXAMPLE = Path(__file__).resolve().parent.parent / "schemas" / "mapping.example.yaml"
ORDER = "com.example.shop.orders.OrderEvent"
NOW_S = int(time.time())
RULE: dict[str, Any] = {"topic": "t", "event_name": "lead", "action_source": "web",
                        "ad_account": "1", "event_id": "{a}", "event_time": "t"}  # fmt: skip
KNOWN_KEYS = [
    "topics", "defaults", "topic", "event_name", "action_source", "ad_account", "event_id",
    "event_time", "filters", "consent", "user_data", "custom_data", "fields", "when", "field",
    "map", "default", "const", "template", "first", "count", "sum", "equals", "in", "reason",
    "unit", "em", "ph", "value", "contents", "each", "denied_values", "action", "matches",
]  # fmt: skip


@pytest.fixture(scope="module")
def mapping() -> MappingRules:
    return compile_mapping(yaml.safe_load(EXAMPLE.read_text()))


def map_record(item: Decoded, mapping: MappingRules, now_s: int) -> Conversion | Skip:
    return Mapper(mapping).map(item, now_s)


def decoded(topic: str, record: dict[str, Any], name: str = "", offset: int = 0) -> Decoded:
    return Decoded(Envelope(Coordinates(topic, 0, offset), value=b""), record, name)


def order(**changes: Any) -> dict[str, Any]:
    return placed_order(NOW_S, **changes)


def test_map_order_builds_checkout_with_all_fields(mapping: MappingRules) -> None:
    record = order()
    result = map_record(decoded("shop.orders", record, ORDER, offset=5), mapping, NOW_S)
    assert isinstance(result, Conversion)
    assert result.coords == Coordinates("shop.orders", 0, 5)
    assert result.ad_account == "549755885176"
    assert result.event_id == "ord-00000042"
    event = result.event
    assert event["event_name"] == "checkout"
    assert event["action_source"] == "web"
    assert event["event_time"] == NOW_S - 60
    assert event["user_data"]["em"] == record["customer"]["email"]
    assert event["user_data"]["ct"] == record["customer"]["address"]["city"]
    assert event["user_data"]["client_ip_address"] == record["context"]["ip_address"]
    custom = event["custom_data"]
    assert custom["order_id"] == "ord-00000042"
    assert custom["content_ids"] == [item["sku"] for item in record["items"]]
    assert custom["num_items"] == sum(item["quantity"] for item in record["items"])
    assert custom["contents"][0]["item_price"] == str(record["items"][0]["unit_price"])
    assert event["event_source_url"] == record["context"]["page_url"]


def test_map_order_filters_and_consent_drop_with_reasons(mapping: MappingRules) -> None:
    test_order = map_record(decoded("shop.orders", order(is_test=True), ORDER), mapping, NOW_S)
    assert test_order == Skip(Coordinates("shop.orders", 0, 0), "filter.test_order")
    record = order()
    record["customer"]["email"] = "ops@example-shop.internal"
    assert isinstance(
        skip := map_record(decoded("shop.orders", record, ORDER), mapping, NOW_S), Skip
    )
    assert skip.reason == "filter.internal_user"
    no_consent = order(consent={"ads_personalization": False, "limited_data_processing": False})
    result = map_record(decoded("shop.orders", no_consent, ORDER), mapping, NOW_S)
    assert isinstance(result, Skip) and result.reason == "consent.denied"


def test_map_paid_orders_have_no_rule_and_are_skipped(mapping: MappingRules) -> None:
    result = map_record(
        decoded("shop.orders", order(event_type="ORDER_PAID"), ORDER), mapping, NOW_S
    )
    assert isinstance(result, Skip) and result.reason == "map.no_rule"


def test_map_engagement_consent_denied_sends_ldp(mapping: MappingRules) -> None:
    record = engagement_record(random.Random(1), 1, NOW_S * 1000)
    record.update(event_type="ADD_TO_CART", ads_consent=False, platform="IOS")
    result = map_record(decoded("shop.engagement", record), mapping, NOW_S)
    assert isinstance(result, Conversion)
    assert result.event["event_name"] == "add_to_cart"
    assert result.event["action_source"] == "app_ios"
    assert result.event["custom_data"]["opt_out_type"] == "LDP"
    assert result.event["custom_data"]["value"] == "49.9"  # formatted as it is read


def test_map_event_time_policy_old_and_future_go_to_dead_letter(mapping: MappingRules) -> None:
    old = order(occurred_at=dt.datetime.fromtimestamp(NOW_S - 8 * 86400, dt.UTC))
    with pytest.raises(PermanentError) as info:
        map_record(decoded("shop.orders", old, ORDER), mapping, NOW_S)
    assert info.value.reason == "map.event_too_old"
    future = order(occurred_at=dt.datetime.fromtimestamp(NOW_S + 3600, dt.UTC))
    with pytest.raises(PermanentError) as info:
        map_record(decoded("shop.orders", future, ORDER), mapping, NOW_S)
    assert info.value.reason == "map.event_in_future"


def test_map_unmapped_store_is_a_permanent_error_naming_key(mapping: MappingRules) -> None:
    with pytest.raises(PermanentError) as info:
        map_record(decoded("shop.orders", order(store_id="store-mars"), ORDER), mapping, NOW_S)
    assert info.value.reason == "map.unmapped_value"
    assert "ad_account" in info.value.detail


def test_map_missing_event_id_field_names_it() -> None:
    rules = compile_mapping(
        {
            "topics": [
                {
                    "topic": "t",
                    "event_name": "lead",
                    "action_source": "web",
                    "ad_account": "1",
                    "event_id": "{lead.id}:{event_name}",
                    "event_time": "ts",
                }
            ]
        }
    )
    with pytest.raises(PermanentError) as info:
        map_record(decoded("t", {"ts": NOW_S, "lead": {}}), rules, NOW_S)
    assert "lead.id" in info.value.detail
    result = map_record(decoded("t", {"ts": NOW_S, "lead": {"id": 7}}), rules, NOW_S)
    assert isinstance(result, Conversion) and result.event_id == "7:lead"


def test_map_topic_pattern_record_name_first_and_const() -> None:
    rules = compile_mapping(
        {
            "topics": [
                {
                    "topic_pattern": r"shop\..*",
                    "record": "A",
                    "event_name": "lead",
                    "action_source": "web",
                    "ad_account": 1,
                    "event_id": "{id}",
                    "event_time": {"field": "ts", "unit": "seconds"},
                },
                {
                    "topic_pattern": r"shop\..*",
                    "event_name": "signup",
                    "action_source": "offline",
                    "ad_account": {"const": "2"},
                    "event_id": "{id}",
                    "event_time": "ts",
                    "user_data": {"em": {"first": ["a", "b"]}},
                    "custom_data": {"num_items": {"count": "items"}},
                },
            ]
        }
    )
    a = map_record(decoded("shop.x", {"id": 1, "ts": NOW_S}, "A"), rules, NOW_S)
    b = map_record(
        decoded("shop.y", {"id": 1, "ts": NOW_S, "b": "x@y", "items": [1, 2]}, "B"), rules, NOW_S
    )
    assert isinstance(a, Conversion) and a.event_name == "lead" and a.ad_account == "1"
    assert isinstance(b, Conversion) and b.event_name == "signup" and b.ad_account == "2"
    assert b.event["user_data"] == {"em": "x@y"}
    assert b.event["custom_data"] == {"num_items": 2}


@pytest.mark.parametrize(("value", "unit", "expected"), [
    (1_700_000_000, "seconds", 1_700_000_000),
    (1_700_000_000_123, "millis", 1_700_000_000),
    (1_700_000_000_123_456, "micros", 1_700_000_000),
    (1_700_000_000_123, "auto", 1_700_000_000),
    ("2023-11-14T22:13:20Z", "iso8601", 1_700_000_000),
    ("2023-11-14T23:13:20+01:00", "auto", 1_700_000_000),
    (dt.datetime(2023, 11, 14, 22, 13, 20, tzinfo=dt.UTC), "auto", 1_700_000_000),
])  # fmt: skip
def test_event_time_seconds_units(value: object, unit: Any, expected: int) -> None:
    assert event_time_seconds(value, unit) == expected


@pytest.mark.parametrize(("document", "key"), [
    ({}, "mapping.topics"),
    ({"topics": [{"topic": "t"}]}, "mapping.topics[0].event_name"),
    ({"topics": [{"topic": "t", "event_name": "buy now!", "action_source": "web",
                  "ad_account": "1", "event_id": "{a}", "event_time": "t"}]},
     "mapping.topics[0].event_name"),
    ({"topics": [{"topic": "t", "event_name": "lead", "action_source": "tv",
                  "ad_account": "1", "event_id": "{a}", "event_time": "t"}]},
     "mapping.topics[0].action_source"),
    ({"topics": [{"topic": "t", "event_name": "lead", "action_source": "web",
                  "ad_account": "1", "event_id": "{a}", "event_time": "t",
                  "user_data": {"email": "x"}}]}, "mapping.topics[0].user_data.email"),
    ({"topics": [{"topic": "t", "event_name": "lead", "action_source": "web",
                  "ad_account": "1", "event_id": "{a}", "event_time": "t",
                  "custom_data": {"price": "x"}}]}, "mapping.topics[0].custom_data.price"),
    ({"topics": [{"topic": "t", "event_name": "lead", "action_source": "web",
                  "ad_account": "1", "event_id": "{a", "event_time": "t"}]},
     "mapping.topics[0].event_id"),
    ({"topics": [{"topic": "t", "event_name": "lead", "action_source": "web",
                  "ad_account": "1", "event_id": "{a}", "event_time": "t",
                  "filters": [{"field": "x", "equals": 1}]}]}, "mapping.topics[0].filters[0]"),
    ({"topics": [{"topic": "t", "topic_pattern": "x", "event_name": "lead",
                  "action_source": "web", "ad_account": "1", "event_id": "{a}",
                  "event_time": "t"}]},
     "mapping.topics[0].topic"),
    ({"defaults": {"max_event_age": "a week"}, "topics": [RULE]}, "mapping.defaults.max_event_age"),
    ({"topics": [{**RULE, "filters": 5}]}, "mapping.topics[0].filters"),
    ({"topics": [{**RULE, "filters": "abc"}]}, "mapping.topics[0].filters"),
    ({"topics": [{**RULE, "filters": [{"reason": "x", "field": "a"}]}]},
     "mapping.topics[0].filters[0]"),
    ({"topics": [{**RULE, "filtres": []}]}, "mapping.topics[0].filtres"),
    ({"topics": [{**RULE, "user_data": {"em": 5}}]}, "mapping.topics[0].user_data.em"),
    ({"topics": [{**RULE, "user_data": {"em": {"fild": "x"}}}]},
     "mapping.topics[0].user_data.em"),
    ({"topics": [{**RULE, "user_data": ["em"]}]}, "mapping.topics[0].user_data"),
    ({"topics": [{**RULE, "consent": {"field": "c", "action": "ignore"}}]},
     "mapping.topics[0].consent.action"),
    ({"topics": [{**RULE, "custom_data": {"contents": {"each": "items"}}}]},
     "mapping.topics[0].custom_data.contents.fields"),
    ({"topics": [{**RULE, "event_time": {"field": "t", "unit": "days"}}]},
     "mapping.topics[0].event_time.unit"),
    ({"topics": [{**RULE, "when": {"field": "a"}}]}, "mapping.topics[0].when"),
    ({"topics": [{**RULE, "event_id": 5}]}, "mapping.topics[0].event_id"),
    ({"defaults": {"dob_order": "ymd"}, "topics": [RULE]}, "mapping.defaults.dob_order"),
    ({"topics": [{**RULE, "ad_account": "acct-1"}]}, "mapping.topics[0].ad_account"),
    ({"topics": [{**RULE, "ad_account": {"field": "s", "map": {"a": "shop-eu"}}}]},
     "mapping.topics[0].ad_account"),
    ({"topics": [RULE], "default": {}}, "mapping.default"),
    ("topics", "mapping"),
    ([RULE], "mapping"),
])  # fmt: skip
def test_compile_mapping_errors_name_the_key(document: Any, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        compile_mapping(document)
    assert info.value.key == key or info.value.key.startswith(key + "."), info.value.key


def test_published_json_schema_is_the_one_the_loader_checks() -> None:
    published = orjson.loads((EXAMPLE.parent / "mapping.schema.json").read_bytes())
    assert published == orjson.loads(orjson.dumps(mapping_json_schema())), (
        "regenerate: python -m consumer.conversion.mapping_schema > schemas/mapping.schema.json"
    )


def test_example_mapping_is_valid_under_the_published_schema() -> None:
    import jsonschema

    published = orjson.loads((EXAMPLE.parent / "mapping.schema.json").read_bytes())
    jsonschema.Draft202012Validator(published).validate(yaml.safe_load(EXAMPLE.read_text()))


yaml_shaped = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["web", "checkout", "{a}", "a.b", "items[].sku", "7d", "mdy", "drop"]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(KNOWN_KEYS) | st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=30,
)


def _mutations(document: Any) -> st.SearchStrategy[Any]:
    """The example mapping with one node (at any depth) replaced by something random."""
    paths: list[tuple[Any, ...]] = []

    def walk(node: Any, path: tuple[Any, ...]) -> None:
        paths.append(path)
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, (*path, k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, (*path, i))

    walk(document, ())

    def replace(path: tuple[Any, ...], value: Any) -> Any:
        if not path:
            return value
        copy = json.loads(json.dumps(document))
        node = copy
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value
        return copy

    return st.builds(replace, st.sampled_from(paths), yaml_shaped)


@given(yaml_shaped | _mutations(yaml.safe_load(EXAMPLE.read_text())))
def test_compile_mapping_on_any_yaml_shape_gives_rules_or_config_error(document: Any) -> None:
    try:
        rules = compile_mapping(document)
    except ConfigError as error:
        assert error.key.startswith("mapping") and str(error)
        return
    assert isinstance(rules, MappingRules)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "order_id",
                "event_type",
                "occurred_at",
                "store_id",
                "channel",
                "customer",
                "context",
                "items",
                "total",
                "currency",
                "consent",
                "is_test",
            ]
        ),
        json_values,
    )
)
def test_map_record_on_arbitrary_records_returns_or_raises_permanent_only(
    record: dict[str, Any],
) -> None:
    rules = compile_mapping(yaml.safe_load(EXAMPLE.read_text()))
    try:
        result = map_record(decoded("shop.orders", record, ORDER), rules, NOW_S)
    except PermanentError:
        return
    assert isinstance(result, Conversion | Skip)


@given(st.text(min_size=1, max_size=40))
def test_map_event_id_template_is_deterministic(order_id: str) -> None:
    rules = compile_mapping(
        {
            "topics": [
                {
                    "topic": "t",
                    "event_name": "checkout",
                    "action_source": "web",
                    "ad_account": "1",
                    "event_id": "{order_id}:{event_name}",
                    "event_time": "ts",
                }
            ]
        }
    )
    record = {"order_id": order_id, "ts": NOW_S}
    first = map_record(decoded("t", record), rules, NOW_S)
    second = map_record(decoded("t", dict(record), offset=9), rules, NOW_S)
    assert isinstance(first, Conversion) and isinstance(second, Conversion)
    assert first.event_id == second.event_id == f"{order_id}:checkout"


def test_map_record_field_ad_account_that_is_not_a_number_is_a_permanent_error() -> None:
    rules = compile_mapping({"topics": [{**RULE, "ad_account": {"field": "acct"}}]})
    with pytest.raises(PermanentError) as info:
        map_record(decoded("t", {"a": "1", "t": NOW_S, "acct": "act_123"}), rules, NOW_S)
    assert info.value.reason == "map.bad_ad_account"


@pytest.mark.parametrize("account", ["²", "٣٣٣", "12³"])
def test_map_record_field_ad_account_in_non_ascii_digits_is_a_permanent_error(
    account: str,
) -> None:
    """str.isdigit takes these; Pinterest refuses the whole request for them (issue 24)."""
    rules = compile_mapping({"topics": [{**RULE, "ad_account": {"field": "acct"}}]})
    with pytest.raises(PermanentError) as info:
        map_record(decoded("t", {"a": "1", "t": NOW_S, "acct": account}), rules, NOW_S)
    assert info.value.reason == "map.bad_ad_account"


@pytest.mark.parametrize("account", ["²", "٣٣٣"])
def test_compile_constant_ad_account_in_non_ascii_digits_names_the_key(account: str) -> None:
    with pytest.raises(ConfigError) as info:
        compile_mapping({"topics": [{**RULE, "ad_account": account}]})
    assert info.value.key == "mapping.topics[0].ad_account"


@pytest.mark.parametrize("template", ["constant", "{event_name}", "order-{event_name}"])
def test_compile_event_id_that_reads_no_record_field_is_refused(template: str) -> None:
    """Every event after the first would dedup away for the whole window (issue 24)."""
    with pytest.raises(ConfigError) as info:
        compile_mapping({"topics": [{**RULE, "event_id": template}]})
    assert info.value.key == "mapping.topics[0].event_id"
    assert "reads no record field" in str(info.value)


@pytest.mark.parametrize(("record", "reason"), [
    ({"a": "x" * 300, "t": NOW_S}, "map.too_long"),  # event_id over its bound
    ({"a": b"\xc3(\xa0", "t": NOW_S}, "map.wrong_type"),  # bytes that are not UTF-8
    ({"a": 10**25, "t": NOW_S}, "map.invalid"),  # wider than 64 bits
    ({"a": "1", "t": float("nan")}, "map.bad_event_time"),
    ({"a": "1", "t": float("inf")}, "map.bad_event_time"),
    ({"a": "1", "t": "9" * 100_000}, "map.bad_event_time"),
])  # fmt: skip
def test_map_required_values_out_of_bounds_dead_letter_naming_the_field(
    record: dict[str, Any], reason: str
) -> None:
    """Issue 24: required fields that cannot be sent dead-letter the event with a reason;
    NaN and infinite times used to raise ValueError / OverflowError out of the build."""
    rules = compile_mapping({"topics": [RULE]})
    with pytest.raises(PermanentError) as info:
        map_record(decoded("t", record), rules, NOW_S)
    assert info.value.reason == reason


def test_map_event_id_from_avro_bytes_is_its_text_never_a_repr() -> None:
    rules = compile_mapping({"topics": [RULE]})
    result = map_record(decoded("t", {"a": b"ord-1", "t": NOW_S}), rules, NOW_S)
    assert isinstance(result, Conversion) and result.event_id == "ord-1"


def test_map_top_level_text_too_long_is_left_out_with_its_reason() -> None:
    rules = compile_mapping(
        {"topics": [{**RULE, "fields": {"event_source_url": "u", "language": "l"}}]}
    )
    record = {"a": "1", "t": NOW_S, "u": "https://x/" + "y" * 20_000, "l": "en"}
    result = map_record(decoded("t", record), rules, NOW_S)
    assert isinstance(result, Conversion)
    assert "event_source_url" not in result.event and result.event["language"] == "en"
    assert result.dropped == (("event_source_url", "too_long"),)


@pytest.mark.parametrize("name", ["first_purchase", "Repeat-Buyer", "x" * 100, "purchase"])
def test_custom_event_names_that_fit_pinterests_rule_are_accepted_and_listed(name: str) -> None:
    """Issue 25 part 1: advertiser-defined names (letters, digits, _ and -, up to 100)."""
    rules = compile_mapping({"topics": [{**RULE, "event_name": name}]})
    assert rules.custom_event_names() == [name]  # said at start-up: must exist in Ads Manager
    result = map_record(decoded("t", {"a": "1", "t": NOW_S}), rules, NOW_S)
    assert isinstance(result, Conversion) and result.event["event_name"] == name


@pytest.mark.parametrize("name", ["buy now!", "x" * 101, "café", ""])
def test_names_outside_the_rule_are_refused_with_the_rule(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        compile_mapping({"topics": [{**RULE, "event_name": name}]})
    assert "event_name" in str(info.value)
    rules = compile_mapping({"topics": [{**RULE, "event_name": {"field": "n"}}]})
    if name:
        with pytest.raises(PermanentError) as error:
            map_record(decoded("t", {"a": "1", "t": NOW_S, "n": name}), rules, NOW_S)
        assert error.value.reason == "map.bad_event_name" and "100 letters" in error.value.detail


def test_custom_names_from_records_are_bounded() -> None:
    """A field full of free text must not become a flood of event names (and metric series)."""
    from consumer.conversion.mapping import MAX_CUSTOM_EVENT_NAMES

    rules = compile_mapping({"topics": [{**RULE, "event_name": {"field": "n"}}]})
    mapper = Mapper(rules)
    for i in range(MAX_CUSTOM_EVENT_NAMES):
        assert isinstance(
            mapper.map(decoded("t", {"a": "1", "t": NOW_S, "n": f"e{i}"}), NOW_S), Conversion
        )
    again = mapper.map(decoded("t", {"a": "1", "t": NOW_S, "n": "E0"}), NOW_S)  # case-insensitive
    assert isinstance(again, Conversion)
    with pytest.raises(PermanentError) as info:
        mapper.map(decoded("t", {"a": "1", "t": NOW_S, "n": "one_too_many"}), NOW_S)
    assert info.value.reason == "map.too_many_event_names"
    assert isinstance(
        mapper.map(decoded("t", {"a": "1", "t": NOW_S, "n": "lead"}), NOW_S), Conversion
    )


# --- one record, several events (a rule's `also`) --------------------------------------------

ALSO_RULE: dict[str, Any] = {
    **RULE,
    "also": [
        {
            "event_name": "first_purchase",
            "event_id": "{a}-first",
            "when": {"field": "n", "equals": 1},
        },
        {"event_name": "add_to_cart", "event_id": "{a}-cart", "custom_data": {"value": "v"}},
    ],
}


def test_also_events_are_built_where_their_condition_holds() -> None:
    mapper = Mapper(compile_mapping({"topics": [ALSO_RULE]}))
    first = decoded("t", {"a": "o1", "t": NOW_S, "n": 1, "v": "9.5"})
    main = mapper.map(first, NOW_S)
    assert isinstance(main, Conversion)
    rule = mapper.rule_for(first)
    assert rule is not None
    variants = mapper.variants(rule, first, main.event)
    assert [(v.event_name, v.event_id) for v in variants] == [  # type: ignore[union-attr]
        ("first_purchase", "o1-first"),
        ("add_to_cart", "o1-cart"),
    ]
    assert variants[0].custom_data is None  # type: ignore[union-attr]
    assert variants[1].custom_data == {"value": "9.5"}  # type: ignore[union-attr]
    later = decoded("t", {"a": "o2", "t": NOW_S, "n": 2, "v": "1"})
    assert [v.event_id for v in mapper.variants(rule, later, {})] == ["o2-cart"]  # type: ignore[union-attr]


def test_an_also_event_that_cannot_be_built_fails_alone() -> None:
    rule = {**RULE, "also": [{"event_name": {"field": "x"}, "event_id": "{a}-x"}]}
    mapper = Mapper(compile_mapping({"topics": [rule]}))
    item = decoded("t", {"a": "o1", "t": NOW_S, "x": "not a name!"})
    assert isinstance(mapper.map(item, NOW_S), Conversion)
    picked = mapper.rule_for(item)
    assert picked is not None
    (failure,) = mapper.variants(picked, item, {})
    assert isinstance(failure, PermanentError) and failure.reason == "map.bad_event_name"


@pytest.mark.parametrize(
    ("also", "key", "message"),
    [
        ([{"event_name": "lead", "event_id": "same-for-all"}], "also[0].event_id", "reads no"),
        ([{"event_name": "not valid!", "event_id": "{a}"}], "also[0].event_name", "expected"),
        ([{"event_id": "{a}"}], "also[0].event_name", "is required"),
        ([{"event_name": "lead", "event_id": "{a}", "ad_account": "2"}], "also[0].ad_account",
         "unknown key"),
        ([{"event_name": "lead", "event_id": "{a}"}] * 11, "also", "at most 10 entries, got 11"),
    ],
)  # fmt: skip
def test_also_mistakes_stop_start_up_naming_the_key(
    also: list[dict[str, Any]], key: str, message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        compile_mapping({"topics": [{**RULE, "also": also}]})
    assert raised.value.key.endswith(key), raised.value.key
    assert message in str(raised.value)


def test_custom_names_of_also_events_are_announced_at_start_up() -> None:
    rules = compile_mapping({"topics": [ALSO_RULE]})
    assert rules.custom_event_names() == ["first_purchase"]


def test_map_app_and_device_info_fields_by_their_published_rules() -> None:
    """Issue 25 part 2: app_info and device_info, one field per rule; a value outside its
    rule is left out with its reason, never the event (inside these objects Pinterest fails
    the whole request with a 400)."""
    fields = {"device_info.form_factor": "ff", "device_info.network_type": "nt",
              "device_info.os_family": "os", "app_info.user_agent": "ua"}  # fmt: skip
    rules = compile_mapping({"topics": [{**RULE, "fields": fields}]})
    record = {"a": "1", "t": NOW_S, "ff": " Desktop", "nt": "cellular_5g", "os": "beos",
              "ua": "Mozilla/5.0"}  # fmt: skip
    result = map_record(decoded("t", record), rules, NOW_S)
    assert isinstance(result, Conversion)
    assert result.event["device_info"] == {"form_factor": "desktop", "network_type": "cellular_5g"}
    assert result.event["app_info"] == {"user_agent": "Mozilla/5.0"}
    assert result.dropped == (("device_info.os_family", "invalid"),)
    record.update(ua="u" * 16_385, os=["ios"], ff=None, nt=None)
    result = map_record(decoded("t", record), rules, NOW_S)
    assert isinstance(result, Conversion) and "app_info" not in result.event
    assert "device_info" not in result.event
    assert dict(result.dropped) == {
        "device_info.os_family": "wrong_type",
        "app_info.user_agent": "too_long",
    }


@pytest.mark.parametrize("name", ["device_info.screen_height", "app_info", "device_info"])
def test_compile_app_and_device_info_fields_without_a_published_rule_are_refused(
    name: str,
) -> None:
    with pytest.raises(ConfigError) as info:
        compile_mapping({"topics": [{**RULE, "fields": {name: "x"}}]})
    assert "mapping.topics[0].fields" in str(info.value)
