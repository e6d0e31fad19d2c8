"""Compiles the mapping YAML into per-topic `Rule`s, once, at start-up (no I/O after that).

Every mistake raises `ConfigError` naming its key (`orders.yaml.topics[0].user_data.em`); the
document's shape is checked first against `schemas/mapping.schema.json`. What a rule may say is
decided here; reading values out of records is `extract.py`, applying a rule is `mapping.py`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import yaml

from consumer.conversion.capi import (
    ACTION_SOURCES,
    CONTENT_FIELDS,
    CUSTOM_FIELDS,
    EVENT_NAME_RULE,
    MAX_EVENT_AGE_S,
    TOP_FIELD_NAMES,
    is_custom_event_name,
    is_event_name,
)
from consumer.conversion.codegen import (
    RuleFunction,
    compile_formatted_table,
    compile_rule_function,
    compile_table,
)
from consumer.conversion.extract import (
    Entry,
    Extractor,
    FormattedTable,
    Formatting,
    Predicate,
    Table,
    Template,
    compile_condition,
    compile_path,
    compile_template,
    compile_value,
)
from consumer.conversion.formats import (
    content_formatting,
    contents_formatting,
    custom_formatting,
    field_formatting,
)
from consumer.conversion.mapping_schema import check_mapping_shape
from consumer.conversion.required import TimeUnit
from consumer.conversion.userdata import USER_FIELDS
from consumer.errors import ConfigError
from consumer.records import is_ad_account_id

ConsentAction = Literal["drop", "opt_out", "limited_data_processing"]
DEFAULT_MAX_FUTURE_SKEW_S: Final = 300
_DURATION = re.compile(r"(\d+)\s*(s|m|h|d)?")
_DURATION_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


@dataclass(frozen=True, slots=True)
class Filter:
    reason: str
    matches: Predicate
    condition: object  # the spec `matches` was compiled from, for the generated function


@dataclass(frozen=True, slots=True)
class Consent:
    action: ConsentAction
    field: str  # the record path it reads (the generated function reads it inline)
    read: Extractor
    denied_values: list[object]

    def is_denied(self, record: Mapping[str, Any]) -> bool:
        return self.read(record) in self.denied_values


@dataclass(frozen=True, slots=True)
class AlsoEvent:
    """One more event a rule emits from the same record when `when` holds: the rule's event
    with this name, id and (when given) custom_data instead of its own."""

    when: Predicate | None
    event_name: Extractor
    event_id: Template
    custom_data: FormattedTable | None


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    topic: str | None
    topic_pattern: re.Pattern[str] | None
    record: str | None
    when: Predicate | None
    event_name: Extractor
    action_source: Extractor
    ad_account: Extractor
    event_id: Template
    event_time: Extractor
    event_time_unit: TimeUnit
    filters: tuple[Filter, ...]
    consent: Consent | None
    user_data: Table
    custom_data: FormattedTable  # read and formatted in one step (`formats.py`)
    fields: FormattedTable  # top-level fields, app_info.<field> and device_info.<field> too
    nests_fields: bool
    # All of the above but `when` and `also` as one generated function (`codegen.py`).
    apply: RuleFunction
    custom_event_names: tuple[str, ...] = ()  # constants that are not standard names
    also: tuple[AlsoEvent, ...] = ()

    def applies_to(self, topic: str, record_name: str) -> bool:
        if self.topic is not None and self.topic != topic:
            return False
        if self.topic_pattern is not None and not self.topic_pattern.fullmatch(topic):
            return False
        return self.record is None or self.record == record_name


@dataclass(frozen=True, slots=True)
class MappingRules:
    rules: tuple[Rule, ...]
    max_event_age_s: int = MAX_EVENT_AGE_S
    max_future_skew_s: int = DEFAULT_MAX_FUTURE_SKEW_S
    default_phone_country: str = "US"
    dob_order: Literal["mdy", "dmy"] = "mdy"

    def topics(self) -> list[str]:
        return [r.topic for r in self.rules if r.topic is not None]

    def custom_event_names(self) -> list[str]:
        """Advertiser-defined names the rules send: each must exist in Ads Manager."""
        return sorted({n for r in self.rules for n in r.custom_event_names})


def parse_duration_s(value: object, key: str) -> int:
    """'7d', '48h', '5m', '30s' or a plain integer of seconds (mapping defaults and CAPI_*)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and (match := _DURATION.fullmatch(value.strip())):
        return int(match.group(1)) * _DURATION_UNITS[match.group(2)]
    raise ConfigError(key, f"expected a duration such as 30s, 5m, 48h or 7d, got {value!r}")


def load_mapping(path: Path, key: str) -> MappingRules:
    """Read and compile a mapping file; `key` is the setting that named it."""
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(key, f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(key, f"{path} is not valid YAML: {exc}") from None
    return compile_mapping(document, key=f"{path.name}")


def _constant(spec: object) -> str | None:
    """The text of a constant required field (a string or number in the mapping), else None."""
    if isinstance(spec, str | int) and not isinstance(spec, bool):
        return str(spec)
    return None


def _compile_constant_or_value(
    spec: object, key: str, accepts: Callable[[str], bool] | None = None, rule: str = ""
) -> Extractor:
    """A constant, or a value read from the record; constants and lookup-table values must
    pass `accepts` (`rule` says what it wants), checked here once rather than per event."""
    if (constant := _constant(spec)) is not None:
        if accepts is not None and not accepts(constant):
            raise ConfigError(key, f"{spec!r} is not {rule}")
        return lambda record: constant
    if accepts is not None:
        for value in _table_values(spec):
            if not accepts(str(value)):
                raise ConfigError(f"{key}.map", f"{value!r} is not {rule}")
    return compile_value(spec, key)


def _table_values(spec: object) -> list[object]:
    """The values of a `{field, map, default}` spec's lookup table, default included."""
    if isinstance(spec, Mapping) and isinstance(spec.get("map"), Mapping):
        return [*spec["map"].values(), *([spec["default"]] if "default" in spec else [])]
    return []


def constants_of(spec: object) -> list[str]:
    """The values a value spec can give without reading them from a record."""
    if isinstance(spec, str | int) and not isinstance(spec, bool):
        return [str(spec)]
    return [str(v) for v in _table_values(spec)]


def _compile_ad_account(spec: object, key: str) -> Extractor:
    """An ad account id is a number (the API answers 404 to anything else): check constants
    and lookup tables here, once, rather than dead-lettering every event later."""
    for value in constants_of(spec):
        if not is_ad_account_id(value):
            raise ConfigError(
                key, f"ad account ids are numbers such as 549755885175, got {value!r}"
            )
    return _compile_constant_or_value(spec, key)


def _named_specs(spec: object, key: str, allowed: frozenset[str]) -> list[tuple[str, object]]:
    """A table's (field, value spec) pairs, in the mapping's order, each field one `allowed`."""
    if spec is None:
        return []
    if not isinstance(spec, Mapping):
        raise ConfigError(key, "expected a table of field → record path")
    for name in spec:
        if name not in allowed:
            raise ConfigError(
                f"{key}.{name}", f"not a field Pinterest accepts here: {sorted(allowed)}"
            )
    return list(spec.items())


def _entry(name: str, spec: object, key: str) -> Entry:
    return name, spec, compile_value(spec, f"{key}.{name}")


def _fields(spec: object, key: str, allowed: frozenset[str]) -> list[Entry]:
    return [_entry(name, value_spec, key) for name, value_spec in _named_specs(spec, key, allowed)]


# A formatted table's entries and how each is formatted (`formats.py`).
Formatted = tuple[list[Entry], list[Formatting]]


def _formatted(
    spec: object, key: str, allowed: frozenset[str], formatting: Callable[[str], Formatting]
) -> Formatted:
    """Fields read and formatted in one step: a rule's top-level fields, or the fields of one
    `contents` item."""
    entries = _fields(spec, key, allowed)
    return entries, [formatting(name) for name, _, _ in entries]


def _custom_data(spec: object, key: str) -> Formatted:
    """custom_data, read and formatted in one step."""
    entries: list[Entry] = []
    formatting: list[Formatting] = []
    for name, value_spec in _named_specs(spec, key, CUSTOM_FIELDS):
        if name == "contents":
            entry, as_contents = _compile_contents(value_spec, f"{key}.contents")
            entries.append(entry)
            formatting.append(as_contents)
        else:
            entries.append(_entry(name, value_spec, key))
            formatting.append(custom_formatting(name))
    return entries, formatting


def _compile_contents(spec: object, key: str) -> tuple[Entry, Formatting]:
    """The array `each` names, each of its objects made an item by the `fields` table."""
    if not isinstance(spec, Mapping) or "each" not in spec or "fields" not in spec:
        raise ConfigError(key, "expected {each: <array path>, fields: {id: ..., quantity: ...}}")
    rows = compile_path(spec["each"], f"{key}.each")
    entries, formatting = _formatted(
        spec["fields"], f"{key}.fields", CONTENT_FIELDS, content_formatting
    )
    return ("contents", spec["each"], rows), contents_formatting(entries, formatting)


def _compile_rule(spec: object, key: str) -> Rule:
    if not isinstance(spec, Mapping):
        raise ConfigError(key, "expected a rule object")
    known = {
        "name", "topic", "topic_pattern", "record", "when", "event_name", "action_source",
        "ad_account", "event_id", "event_time", "filters", "consent", "user_data",
        "custom_data", "fields", "also",
    }  # fmt: skip
    for name in spec:
        if name not in known:
            raise ConfigError(f"{key}.{name}", f"unknown key; expected one of {sorted(known)}")
    topic = spec.get("topic")
    pattern_text = spec.get("topic_pattern")
    if (topic is None) == (pattern_text is None):
        raise ConfigError(f"{key}.topic", "give exactly one of topic or topic_pattern")
    try:
        pattern = re.compile(pattern_text) if pattern_text is not None else None
    except re.error as exc:
        raise ConfigError(f"{key}.topic_pattern", f"invalid regular expression: {exc}") from None
    for required in ("event_name", "action_source", "ad_account", "event_id", "event_time"):
        if required not in spec:
            raise ConfigError(f"{key}.{required}", "is required")
    event_time = spec["event_time"]
    if isinstance(event_time, str):
        event_time = {"field": event_time}
    if not isinstance(event_time, Mapping) or "field" not in event_time:
        raise ConfigError(f"{key}.event_time", "expected {field: <path>, unit: millis}")
    unit = event_time.get("unit", "auto")
    if unit not in ("auto", "seconds", "millis", "micros", "iso8601"):
        raise ConfigError(
            f"{key}.event_time.unit", "expected auto, seconds, millis, micros or iso8601"
        )
    event_id = _compile_event_id(spec["event_id"], f"{key}.event_id")
    filters = []
    for i, filter_spec in enumerate(spec.get("filters") or []):
        filter_key = f"{key}.filters[{i}]"
        if not isinstance(filter_spec, Mapping) or not filter_spec.get("reason"):
            raise ConfigError(f"{filter_key}.reason", "each filter needs a reason")
        condition = {k: v for k, v in filter_spec.items() if k != "reason"}
        matches = compile_condition(condition, filter_key)
        filters.append(Filter(str(filter_spec["reason"]), matches, condition))
    consent = None
    if (consent_spec := spec.get("consent")) is not None:
        consent = _compile_consent(consent_spec, f"{key}.consent")
    also = tuple(
        _compile_also(also_spec, f"{key}.also[{i}]")
        for i, also_spec in enumerate(spec.get("also") or [])
    )
    names = [spec["event_name"], *(a["event_name"] for a in spec.get("also") or [])]
    custom_names = {n for name in names for n in constants_of(name) if is_custom_event_name(n)}
    when = compile_condition(spec["when"], f"{key}.when") if "when" in spec else None
    event_name = _compile_constant_or_value(
        spec["event_name"], f"{key}.event_name", is_event_name, EVENT_NAME_RULE
    )
    action_source = _compile_constant_or_value(
        spec["action_source"],
        f"{key}.action_source",
        ACTION_SOURCES.__contains__,
        f"one of {sorted(ACTION_SOURCES)}",
    )
    ad_account = _compile_ad_account(spec["ad_account"], f"{key}.ad_account")
    event_time_path = compile_path(event_time["field"], f"{key}.event_time.field")
    user_data = _fields(spec.get("user_data"), f"{key}.user_data", USER_FIELDS)
    custom_data = _custom_data(spec.get("custom_data"), f"{key}.custom_data")
    fields = _formatted(spec.get("fields"), f"{key}.fields", TOP_FIELD_NAMES, field_formatting)
    apply = compile_rule_function(
        filters=[(f.reason, f.matches, f.condition) for f in filters],
        consent=None
        if consent is None
        else (consent.read, consent.action, consent.field, consent.denied_values),
        event_name=(spec["event_name"], event_name, _constant(spec["event_name"])),
        action_source=(spec["action_source"], action_source, _constant(spec["action_source"])),
        ad_account=(spec["ad_account"], ad_account, _constant(spec["ad_account"])),
        event_time=(event_time["field"], event_time_path, unit),
        event_id=event_id,
        user_data=user_data,
        custom_data=custom_data,
        fields=fields,
    )
    return Rule(
        name=str(spec.get("name") or topic or pattern_text),
        topic=topic,
        topic_pattern=pattern,
        record=spec.get("record"),
        when=when,
        event_name=event_name,
        custom_event_names=tuple(sorted(custom_names)),
        also=also,
        action_source=action_source,
        ad_account=ad_account,
        event_id=event_id,
        event_time=event_time_path,
        event_time_unit=unit,
        filters=tuple(filters),
        consent=consent,
        user_data=compile_table(user_data),
        custom_data=compile_formatted_table(*custom_data),
        fields=compile_formatted_table(*fields),
        nests_fields=any("." in name for name in spec.get("fields") or ()),
        apply=apply,
    )


def _compile_event_id(spec: object, key: str) -> Template:
    event_id = compile_template(spec, key, frozenset({"event_name"}))
    if not event_id.fields:
        # A constant id (or only {event_name}) makes every event after the first a duplicate
        # for the whole dedup window: refused here rather than silently dropping them.
        raise ConfigError(
            key,
            f"{spec!r} reads no record field: every event would share one id; "
            "use a field that identifies the event, such as '{order_id}'",
        )
    return event_id


def _compile_also(spec: Mapping[str, Any], key: str) -> AlsoEvent:
    """The shape is checked by the JSON Schema; names and ids are checked here."""
    return AlsoEvent(
        when=compile_condition(spec["when"], f"{key}.when") if "when" in spec else None,
        event_name=_compile_constant_or_value(
            spec["event_name"], f"{key}.event_name", is_event_name, EVENT_NAME_RULE
        ),
        event_id=_compile_event_id(spec["event_id"], f"{key}.event_id"),
        custom_data=(
            compile_formatted_table(*_custom_data(spec["custom_data"], f"{key}.custom_data"))
            if "custom_data" in spec
            else None
        ),
    )


def _compile_consent(spec: object, key: str) -> Consent:
    if not isinstance(spec, Mapping) or "field" not in spec:
        raise ConfigError(key, "expected {field: <path>, denied_values: [...], action: drop}")
    action = spec.get("action", "drop")
    if action not in ("drop", "opt_out", "limited_data_processing"):
        raise ConfigError(f"{key}.action", "expected drop, opt_out or limited_data_processing")
    denied = spec.get("denied_values", [False])
    if not isinstance(denied, list):
        raise ConfigError(f"{key}.denied_values", "expected a list")
    get = compile_path(spec["field"], f"{key}.field")
    denied_values = [v for v in denied]
    return Consent(action, spec["field"], get, denied_values)


def compile_mapping(document: object, key: str = "mapping") -> MappingRules:
    """Validate a parsed mapping document; raises `ConfigError` naming the offending key."""
    check_mapping_shape(document, key)
    if not isinstance(document, Mapping):
        raise ConfigError(key, "expected a YAML object with a 'topics' list")
    defaults = document.get("defaults") or {}
    if not isinstance(defaults, Mapping):
        raise ConfigError(f"{key}.defaults", "expected an object")
    dob_order = defaults.get("dob_order", "mdy")
    if dob_order not in ("mdy", "dmy"):
        raise ConfigError(f"{key}.defaults.dob_order", "expected mdy or dmy")
    country = str(defaults.get("default_phone_country", "US")).upper()
    if len(country) != 2 or not country.isalpha():
        raise ConfigError(f"{key}.defaults.default_phone_country", "expected ISO alpha-2")
    max_event_age_s = parse_duration_s(
        defaults.get("max_event_age", MAX_EVENT_AGE_S), f"{key}.defaults.max_event_age"
    )
    max_future_skew_s = parse_duration_s(
        defaults.get("max_future_skew", DEFAULT_MAX_FUTURE_SKEW_S),
        f"{key}.defaults.max_future_skew",
    )
    rules_spec = document.get("topics")
    if not isinstance(rules_spec, list) or not rules_spec:
        raise ConfigError(f"{key}.topics", "expected a non-empty list of rules")
    rules = tuple(_compile_rule(spec, f"{key}.topics[{i}]") for i, spec in enumerate(rules_spec))
    return MappingRules(
        rules=rules,
        max_event_age_s=max_event_age_s,
        max_future_skew_s=max_future_skew_s,
        default_phone_country=country,
        dob_order=dob_order,
    )
