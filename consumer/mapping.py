"""Declarative per-topic rules that turn a decoded record into a Pinterest event (pure, no I/O).

`compile_mapping` validates the YAML document once (errors name the key); `map_record` turns one
`Decoded` into a `Conversion` with raw user data, a `Skip`, or raises `PermanentError`.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final, Literal

from consumer.capi import (
    ACTION_SOURCES,
    CONTENT_FIELDS,
    CUSTOM_FIELDS,
    EVENT_NAMES,
    TOP_STRING_FIELDS,
)
from consumer.errors import ConfigError, PermanentError
from consumer.mapping_schema import check_mapping_shape
from consumer.records import AdAccountId, Conversion, Decoded, EventId, Skip
from consumer.userdata import USER_FIELDS

Extractor = Callable[[Mapping[str, Any]], Any]
Predicate = Callable[[Mapping[str, Any]], bool]
TimeUnit = Literal["auto", "seconds", "millis", "micros", "iso8601"]
ConsentAction = Literal["drop", "opt_out", "limited_data_processing"]

_MISSING: Final = object()
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][\w.\[\]]*)\}")
_TEMPLATE_PIECES: dict[str, tuple[str, ...]] = {}
_DURATION = re.compile(r"(\d+)\s*(s|m|h|d)?")
_DURATION_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


@dataclass(frozen=True, slots=True)
class Filter:
    reason: str
    matches: Predicate


@dataclass(frozen=True, slots=True)
class Consent:
    is_denied: Predicate
    action: ConsentAction


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
    event_id_template: str
    event_id_fields: tuple[tuple[str, Extractor], ...]
    event_time: Extractor
    event_time_unit: TimeUnit
    filters: tuple[Filter, ...]
    consent: Consent | None
    user_data: tuple[tuple[str, Extractor], ...]
    custom_data: tuple[tuple[str, Extractor], ...]
    fields: tuple[tuple[str, Extractor], ...]

    def applies_to(self, topic: str, record_name: str) -> bool:
        if self.topic is not None and self.topic != topic:
            return False
        if self.topic_pattern is not None and not self.topic_pattern.fullmatch(topic):
            return False
        return self.record is None or self.record == record_name


@dataclass(frozen=True, slots=True)
class MappingRules:
    rules: tuple[Rule, ...]
    max_event_age_s: int = 7 * 86400
    max_future_skew_s: int = 300
    default_phone_country: str = "US"
    dob_order: Literal["mdy", "dmy"] = "mdy"
    _by_key: dict[tuple[str, str], tuple[Rule, ...]] = field(default_factory=dict, repr=False)

    def rules_for(self, topic: str, record_name: str) -> tuple[Rule, ...]:
        key = (topic, record_name)
        found = self._by_key.get(key)
        if found is None:
            found = tuple(r for r in self.rules if r.applies_to(topic, record_name))
            self._by_key[key] = found
        return found

    def topics(self) -> list[str]:
        return [r.topic for r in self.rules if r.topic is not None]


def parse_duration_s(value: object, key: str) -> int:
    """'7d', '48h', '5m', '30s' or a plain integer of seconds."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and (match := _DURATION.fullmatch(value.strip())):
        return int(match.group(1)) * _DURATION_UNITS[match.group(2)]
    raise ConfigError(key, f"expected a duration such as 30s, 5m, 48h or 7d, got {value!r}")


def _walk(value: Any, parts: Sequence[str]) -> Any:
    # `type(...) is dict` rather than isinstance(Mapping): records are plain dicts (fastavro,
    # orjson) and the ABC check was the single largest cost of mapping an event.
    for i, part in enumerate(parts):
        if type(value) is not dict:
            return None
        if part.endswith("[]"):
            items = value.get(part[:-2])
            if type(items) is not list:
                return None
            rest = parts[i + 1 :]
            out = [_walk(item, rest) for item in items] if rest else items
            return [v for v in out if v is not None]
        value = value.get(part)
    return value


def compile_path(path: str, key: str) -> Extractor:
    if not isinstance(path, str) or not path or any(not p for p in path.split(".")):
        raise ConfigError(key, f"expected a record path such as customer.email, got {path!r}")
    parts = tuple(path.split("."))
    if any(part.endswith("[]") for part in parts) or len(parts) > 3:
        return lambda record: _walk(record, parts)
    if len(parts) == 1:
        name = parts[0]
        return lambda record: record.get(name) if type(record) is dict else None
    if len(parts) == 2:
        first, second = parts

        def get_two(record: Mapping[str, Any]) -> Any:
            value = record.get(first) if type(record) is dict else None
            return value.get(second) if type(value) is dict else None

        return get_two
    first, second, third = parts

    def get_three(record: Mapping[str, Any]) -> Any:
        value = record.get(first) if type(record) is dict else None
        value = value.get(second) if type(value) is dict else None
        return value.get(third) if type(value) is dict else None

    return get_three


def _compile_lookup(spec: Mapping[str, Any], key: str, base: Extractor) -> Extractor:
    table = spec["map"]
    if not isinstance(table, Mapping):
        raise ConfigError(f"{key}.map", "expected a table of record value → output value")
    lookup = {str(k): v for k, v in table.items()}
    default = spec.get("default", _MISSING)

    def extract(record: Mapping[str, Any]) -> Any:
        raw = base(record)
        if raw is None:
            return None if default is _MISSING else default
        found = lookup.get(str(raw), default)
        if found is _MISSING:
            raise PermanentError("map.unmapped_value", f"{key}: no entry for a record value")
        return found

    return extract


def compile_value(spec: object, key: str) -> Extractor:
    """A path, or one of {field, map, default}, {const}, {template}, {first}, {count}, {sum}."""
    if isinstance(spec, str):
        return compile_path(spec, key)
    if not isinstance(spec, Mapping):
        raise ConfigError(key, "expected a record path or an object such as {field: ...}")
    if "const" in spec:
        constant = spec["const"]
        return lambda record: constant
    if "template" in spec:
        template, fields = compile_template(spec["template"], f"{key}.template")
        return lambda record: render_template(template, fields, record, {})
    if "first" in spec:
        options = spec["first"]
        if not isinstance(options, list) or not options:
            raise ConfigError(f"{key}.first", "expected a list of value specs")
        extractors = [compile_value(o, f"{key}.first[{i}]") for i, o in enumerate(options)]

        def first(record: Mapping[str, Any]) -> Any:
            for extractor in extractors:
                value = extractor(record)
                if value not in (None, "", []):
                    return value
            return None

        return first
    if "count" in spec:
        items = compile_path(spec["count"], f"{key}.count")
        return lambda record: len(v) if isinstance(v := items(record), list) else None
    if "sum" in spec:
        items = compile_path(spec["sum"], f"{key}.sum")

        def total(record: Mapping[str, Any]) -> Any:
            values = items(record)
            if not isinstance(values, list):
                return None
            return sum(int(v) for v in values if isinstance(v, int | float | Decimal))

        return total
    if "field" in spec:
        base = compile_path(spec["field"], f"{key}.field")
        if "map" in spec:
            return _compile_lookup(spec, key, base)
        if "default" in spec:
            default = spec["default"]
            return lambda record: default if (v := base(record)) is None else v
        return base
    raise ConfigError(key, "expected one of field, const, template, first, count, sum")


def compile_template(template: object, key: str) -> tuple[str, tuple[tuple[str, Extractor], ...]]:
    if not isinstance(template, str) or not template:
        raise ConfigError(key, "expected a template string such as '{order_id}:checkout'")
    names = _PLACEHOLDER.findall(template)
    if "{" in _PLACEHOLDER.sub("", template) or "}" in _PLACEHOLDER.sub("", template):
        raise ConfigError(key, f"malformed placeholder in {template!r}")
    fields = tuple(
        (name, compile_path(name, f"{key}{{{name}}}")) for name in names if name != "event_name"
    )
    return template, fields


def render_template(
    template: str,
    fields: tuple[tuple[str, Extractor], ...],
    record: Mapping[str, Any],
    extra: Mapping[str, str],
) -> str:
    values = dict(extra)
    for name, extractor in fields:
        value = extractor(record)
        if value is None or value == "":
            raise PermanentError("map.missing_field", f"template field {name} is missing")
        values[name] = value if type(value) is str else str(value)
    pieces = _TEMPLATE_PIECES.get(template)
    if pieces is None:
        pieces = _TEMPLATE_PIECES[template] = tuple(_PLACEHOLDER.split(template))
    # split() alternates literal text and placeholder names: text, name, text, name, text.
    return "".join(values[p] if i % 2 else p for i, p in enumerate(pieces))


def compile_condition(spec: object, key: str) -> Predicate:
    """{field, equals|not_equals|in|not_in|exists|matches}; a list means all of them."""
    if isinstance(spec, list):
        parts = [compile_condition(s, f"{key}[{i}]") for i, s in enumerate(spec)]
        return lambda record: all(p(record) for p in parts)
    if not isinstance(spec, Mapping) or "field" not in spec:
        raise ConfigError(key, "expected a condition such as {field: is_test, equals: true}")
    get = compile_path(spec["field"], f"{key}.field")
    if "equals" in spec:
        expected = spec["equals"]
        return lambda record: get(record) == expected
    if "not_equals" in spec:
        unexpected = spec["not_equals"]
        return lambda record: get(record) != unexpected
    if "in" in spec or "not_in" in spec:
        is_in = "in" in spec
        values = spec["in" if is_in else "not_in"]
        if not isinstance(values, list):
            raise ConfigError(f"{key}.{'in' if is_in else 'not_in'}", "expected a list")
        allowed = frozenset(str(v) for v in values)
        return lambda record: (str(get(record)) in allowed) == is_in
    if "exists" in spec:
        wanted = bool(spec["exists"])
        return lambda record: (get(record) not in (None, "")) == wanted
    if "matches" in spec:
        try:
            pattern = re.compile(str(spec["matches"]))
        except re.error as exc:
            raise ConfigError(f"{key}.matches", f"invalid regular expression: {exc}") from None
        return lambda record: isinstance(v := get(record), str) and bool(pattern.search(v))
    raise ConfigError(key, "expected equals, not_equals, in, not_in, exists or matches")


def _compile_constant_or_value(
    spec: object, key: str, allowed: frozenset[str] | None = None
) -> Extractor:
    if isinstance(spec, str | int) and not isinstance(spec, bool) and allowed is not None:
        if str(spec) not in allowed:
            raise ConfigError(key, f"{spec!r} is not one of {sorted(allowed)}")
        constant = str(spec)
        return lambda record: constant
    if isinstance(spec, str | int) and not isinstance(spec, bool):
        constant = str(spec)
        return lambda record: constant
    if isinstance(spec, Mapping) and allowed is not None and isinstance(spec.get("map"), Mapping):
        for value in [*spec["map"].values(), spec.get("default", next(iter(allowed)))]:
            if str(value) not in allowed:
                raise ConfigError(f"{key}.map", f"{value!r} is not one of {sorted(allowed)}")
    return compile_value(spec, key)


def _compile_ad_account(spec: object, key: str) -> Extractor:
    """An ad account id is a number (the API answers 404 to anything else): check constants
    and lookup tables here, once, rather than dead-lettering every event later."""
    values: list[object] = []
    if isinstance(spec, str | int) and not isinstance(spec, bool):
        values = [spec]
    elif isinstance(spec, Mapping) and isinstance(spec.get("map"), Mapping):
        values = [*spec["map"].values(), *([spec["default"]] if "default" in spec else [])]
    for value in values:
        if not str(value).isdigit():
            raise ConfigError(
                key, f"ad account ids are numbers such as 549755885175, got {str(value)!r}"
            )
    return _compile_constant_or_value(spec, key)


def _compile_fields(
    spec: object, key: str, allowed: frozenset[str]
) -> tuple[tuple[str, Extractor], ...]:
    if spec is None:
        return ()
    if not isinstance(spec, Mapping):
        raise ConfigError(key, "expected a table of field → record path")
    out = []
    for name, value_spec in spec.items():
        if name not in allowed:
            raise ConfigError(
                f"{key}.{name}", f"not a field Pinterest accepts here: {sorted(allowed)}"
            )
        if key.endswith("custom_data") and name == "contents":
            out.append((name, _compile_contents(value_spec, f"{key}.contents")))
        else:
            out.append((name, compile_value(value_spec, f"{key}.{name}")))
    return tuple(out)


def _compile_contents(spec: object, key: str) -> Extractor:
    if not isinstance(spec, Mapping) or "each" not in spec or "fields" not in spec:
        raise ConfigError(key, "expected {each: <array path>, fields: {id: ..., quantity: ...}}")
    items = compile_path(spec["each"], f"{key}.each")
    fields = _compile_fields(spec["fields"], f"{key}.fields", CONTENT_FIELDS)

    def contents(record: Mapping[str, Any]) -> Any:
        values = items(record)
        if not isinstance(values, list):
            return None
        out = []
        for item in values:
            if not isinstance(item, Mapping):
                continue
            built = {name: v for name, get in fields if (v := get(item)) is not None}
            if built:
                out.append(built)
        return out or None

    return contents


def _compile_rule(spec: object, key: str) -> Rule:
    if not isinstance(spec, Mapping):
        raise ConfigError(key, "expected a rule object")
    known = {
        "name", "topic", "topic_pattern", "record", "when", "event_name", "action_source",
        "ad_account", "event_id", "event_time", "filters", "consent", "user_data",
        "custom_data", "fields",
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
    event_id_template, event_id_fields = compile_template(spec["event_id"], f"{key}.event_id")
    filters = []
    for i, filter_spec in enumerate(spec.get("filters") or []):
        filter_key = f"{key}.filters[{i}]"
        if not isinstance(filter_spec, Mapping) or not filter_spec.get("reason"):
            raise ConfigError(f"{filter_key}.reason", "each filter needs a reason")
        condition = {k: v for k, v in filter_spec.items() if k != "reason"}
        filters.append(Filter(str(filter_spec["reason"]), compile_condition(condition, filter_key)))
    consent = None
    if (consent_spec := spec.get("consent")) is not None:
        consent = _compile_consent(consent_spec, f"{key}.consent")
    return Rule(
        name=str(spec.get("name") or topic or pattern_text),
        topic=topic,
        topic_pattern=pattern,
        record=spec.get("record"),
        when=compile_condition(spec["when"], f"{key}.when") if "when" in spec else None,
        event_name=_compile_constant_or_value(spec["event_name"], f"{key}.event_name", EVENT_NAMES),
        action_source=_compile_constant_or_value(
            spec["action_source"], f"{key}.action_source", ACTION_SOURCES
        ),
        ad_account=_compile_ad_account(spec["ad_account"], f"{key}.ad_account"),
        event_id_template=event_id_template,
        event_id_fields=event_id_fields,
        event_time=compile_path(event_time["field"], f"{key}.event_time.field"),
        event_time_unit=unit,
        filters=tuple(filters),
        consent=consent,
        user_data=_compile_fields(spec.get("user_data"), f"{key}.user_data", USER_FIELDS),
        custom_data=_compile_fields(spec.get("custom_data"), f"{key}.custom_data", CUSTOM_FIELDS),
        fields=_compile_fields(
            spec.get("fields"), f"{key}.fields", TOP_STRING_FIELDS | {"opt_out", "wifi"}
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
    return Consent(lambda record: get(record) in denied_values, action)


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
        defaults.get("max_event_age", 7 * 86400), f"{key}.defaults.max_event_age"
    )
    max_future_skew_s = parse_duration_s(
        defaults.get("max_future_skew", 300), f"{key}.defaults.max_future_skew"
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


def event_time_seconds(value: object, unit: TimeUnit) -> int:
    """Unix seconds from an Avro timestamp (datetime), an integer in `unit`, or ISO-8601 text."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return int(value.timestamp())
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = int(value)
        if unit == "auto":
            unit = "micros" if number > 10**14 else "millis" if number > 10**11 else "seconds"
        divisor = {"seconds": 1, "millis": 1000, "micros": 1_000_000}.get(unit)
        if divisor is not None:
            return number // divisor
    if isinstance(value, str) and unit in ("auto", "iso8601"):
        try:
            parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise PermanentError("map.bad_event_time", "event_time is not ISO-8601") from None
        return event_time_seconds(parsed, "auto")
    raise PermanentError("map.bad_event_time", f"event_time does not fit unit {unit}")


def _select_rule(rules: Sequence[Rule], record: Mapping[str, Any]) -> Rule | None:
    for rule in rules:
        if rule.when is None or rule.when(record):
            return rule
    return None


def _required(value: object, name: str) -> str:
    if value is None or value == "":
        raise PermanentError("map.missing_field", f"{name} is missing")
    return str(value)


def map_record(decoded: Decoded, mapping: MappingRules, now_s: int) -> Conversion | Skip:
    """Build the event for one record. Raises `PermanentError` (dead-letter) on bad data."""
    coords = decoded.envelope.coords
    rule = _select_rule(mapping.rules_for(coords.topic, decoded.record_name), decoded.record)
    if rule is None:
        return Skip(coords, "map.no_rule")
    record = decoded.record
    for filter_ in rule.filters:
        if filter_.matches(record):
            return Skip(coords, f"filter.{filter_.reason}")
    opt_out_type = None
    if rule.consent is not None and rule.consent.is_denied(record):
        if rule.consent.action == "drop":
            return Skip(coords, "consent.denied")
        opt_out_type = "LDP" if rule.consent.action == "limited_data_processing" else None
    event_name = _required(rule.event_name(record), "event_name")
    if event_name not in EVENT_NAMES:
        raise PermanentError("map.bad_event_name", "event_name is not one Pinterest accepts")
    action_source = _required(rule.action_source(record), "action_source")
    if action_source not in ACTION_SOURCES:
        raise PermanentError("map.bad_action_source", "action_source is not one Pinterest accepts")
    ad_account = _required(rule.ad_account(record), "ad_account")
    if not ad_account.isdigit():
        raise PermanentError("map.bad_ad_account", "ad_account is not a numeric ad account id")
    raw_time = rule.event_time(record)
    if raw_time is None:
        raise PermanentError("map.missing_field", "event_time is missing")
    event_time_s = event_time_seconds(raw_time, rule.event_time_unit)
    if event_time_s < now_s - mapping.max_event_age_s:
        raise PermanentError("map.event_too_old", "event_time is older than max_event_age")
    if event_time_s > now_s + mapping.max_future_skew_s:
        raise PermanentError("map.event_in_future", "event_time is in the future")
    event_id = render_template(
        rule.event_id_template, rule.event_id_fields, record, {"event_name": event_name}
    )
    user_data = {name: v for name, get in rule.user_data if (v := get(record)) not in (None, [])}
    event: dict[str, Any] = {
        "event_name": event_name,
        "action_source": action_source,
        "event_time": event_time_s,
        "event_id": event_id,
        "user_data": user_data,
    }
    custom = {name: v for name, get in rule.custom_data if (v := get(record)) not in (None, [])}
    if opt_out_type is not None:
        custom["opt_out_type"] = opt_out_type
    if custom:
        event["custom_data"] = custom
    for name, get in rule.fields:
        if (value := get(record)) is not None:
            event[name] = value
    if rule.consent is not None and opt_out_type is None and rule.consent.is_denied(record):
        event["opt_out"] = True
    return Conversion(
        coords=coords,
        ad_account=AdAccountId(ad_account),
        event_id=EventId(event_id),
        event_time_s=event_time_s,
        event_name=event_name,
        event=event,
        envelope=decoded.envelope,
    )
