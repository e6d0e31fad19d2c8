"""The map stage: one decoded record → a Pinterest event with raw user data, or a skip (pure).

`Mapper.map` picks the first rule for the record's topic and name whose `when` holds, applies its
filters and consent, and builds the event. Everything it builds is valid for the API's closed
schema by construction (names and sources from the allowed sets, strings where strings go,
booleans where booleans go), so the pipeline need not re-check it; data a rule cannot turn into
such an event raises `PermanentError` (dead-letter). Rules are compiled by `rules.py`, each
into one generated function (`codegen.py`) that `apply` runs; `apply_reference` is the same
steps written out, which the generated code is held to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from consumer.conversion import required
from consumer.conversion.capi import EVENT_NAME_RULE, EVENT_NAMES, is_custom_event_name
from consumer.conversion.rules import MappingRules, Rule
from consumer.errors import PermanentError
from consumer.records import AdAccountId, Conversion, Decoded, EventId, Skip

# Distinct custom event names one process takes from records (Pinterest allows 15 per
# advertiser; several advertisers per process are common).
MAX_CUSTOM_EVENT_NAMES: Final = 100


@dataclass(frozen=True, slots=True)
class Variant:
    """One of a rule's `also` events, as the record gives it: the rule's event with this name
    and id, and this custom_data when the `also` names its own (None: the rule's), with the
    custom_data fields it left out."""

    event_name: str
    event_id: str
    custom_data: dict[str, Any] | None
    dropped: tuple[tuple[str, str], ...] = ()


class Mapper:
    """Applies compiled rules; remembers which rules apply to each (topic, record name)."""

    def __init__(self, mapping: MappingRules) -> None:
        self.mapping = mapping
        self._rules_by_key: dict[tuple[str, str], tuple[Rule, ...]] = {}
        # Custom event names met in records (lowercased, as Pinterest compares them).
        self.custom_names_seen: set[str] = set()

    def _is_custom_name_taken(self, name: str) -> bool:
        """A custom name from a record: valid, and within `MAX_CUSTOM_EVENT_NAMES` distinct
        ones. Pinterest takes 15 per advertiser; a field full of free text would otherwise
        send junk names and give every metric labelled by event name a series per value."""
        if not is_custom_event_name(name):
            return False
        folded = name.lower()
        if folded in self.custom_names_seen:
            return True
        if len(self.custom_names_seen) >= MAX_CUSTOM_EVENT_NAMES:
            raise PermanentError(
                "map.too_many_event_names",
                f"more than {MAX_CUSTOM_EVENT_NAMES} custom event names; is event_name mapped "
                "from the right field?",
            )
        self.custom_names_seen.add(folded)
        return True

    def rules_for(self, topic: str, record_name: str) -> tuple[Rule, ...]:
        key = (topic, record_name)
        found = self._rules_by_key.get(key)
        if found is None:
            found = tuple(r for r in self.mapping.rules if r.applies_to(topic, record_name))
            self._rules_by_key[key] = found
        return found

    def rule_for(self, decoded: Decoded) -> Rule | None:
        """The first rule for the record's topic and name whose `when` holds."""
        record = decoded.record
        for rule in self.rules_for(decoded.envelope.coords.topic, decoded.record_name):
            if rule.when is None or rule.when(record):
                return rule
        return None

    def map(self, decoded: Decoded, now_s: int) -> Conversion | Skip:
        """Build the event for one record. Raises `PermanentError` (dead-letter) on bad data."""
        return self.apply(self.rule_for(decoded), decoded, now_s)

    def apply(self, rule: Rule | None, decoded: Decoded, now_s: int) -> Conversion | Skip:
        """`map` with the rule already picked (`rule_for`), for a caller that needs it again:
        the rule's generated function (`apply_reference` says what it does)."""
        if rule is None:
            return Skip(decoded.envelope.coords, "map.no_rule")
        mapping = self.mapping
        return rule.apply(
            decoded.record,
            decoded.envelope,
            now_s - mapping.max_event_age_s,
            now_s + mapping.max_future_skew_s,
            self.event_name,
        )

    def variants(
        self, rule: Rule, decoded: Decoded, event: dict[str, Any]
    ) -> list[Variant | PermanentError]:
        """The rule's `also` events for a record whose own `event` it built: each whose `when`
        holds, or the `PermanentError` that stops that one alone."""
        record = decoded.record
        out: list[Variant | PermanentError] = []
        for also in rule.also:
            if also.when is not None and not also.when(record):
                continue
            try:
                event_name = self.event_name(also.event_name(record))
                event_id = required.event_id(
                    also.event_id.render(record, {"event_name": event_name})
                )
                custom = None
                left_out: list[tuple[str, str]] = []
                if also.custom_data is not None:
                    custom = also.custom_data(record, left_out)
                    opt_out_type = event.get("custom_data", {}).get("opt_out_type")
                    if opt_out_type is not None:  # consent applies to the record's every event
                        custom["opt_out_type"] = opt_out_type
            except PermanentError as exc:
                out.append(exc)
                continue
            out.append(Variant(event_name, event_id, custom, tuple(left_out)))
        return out

    def event_name(self, value: object) -> str:
        """The event name a record gives: a standard one, or a custom one within the limit."""
        event_name = required.required_text(value, "event_name")
        if event_name not in EVENT_NAMES and not self._is_custom_name_taken(event_name):
            raise PermanentError("map.bad_event_name", f"event_name is not {EVENT_NAME_RULE}")
        return event_name

    def apply_reference(self, rule: Rule, decoded: Decoded, now_s: int) -> Conversion | Skip:
        """What applying a rule means, step by step: `apply` runs the function generated for
        the rule (`codegen.compile_rule_function`, the same steps in straight-line code, twice
        as fast), which `tests/test_codegen.py` holds to this one's answers and errors."""
        coords, record, mapping = decoded.envelope.coords, decoded.record, self.mapping
        for filter_ in rule.filters:
            if filter_.matches(record):
                return Skip(coords, f"filter.{filter_.reason}")
        is_denied = rule.consent is not None and rule.consent.is_denied(record)
        opt_out_type = None
        if is_denied:
            assert rule.consent is not None
            if rule.consent.action == "drop":
                return Skip(coords, "consent.denied")
            if rule.consent.action == "limited_data_processing":
                opt_out_type = "LDP"
        event_name = self.event_name(rule.event_name(record))
        action_source = required.action_source(rule.action_source(record))
        ad_account = required.ad_account(rule.ad_account(record))
        event_time_s = required.event_time(
            rule.event_time(record),
            rule.event_time_unit,
            now_s - mapping.max_event_age_s,
            now_s + mapping.max_future_skew_s,
        )
        event_id = required.event_id(rule.event_id.render(record, {"event_name": event_name}))
        event: dict[str, Any] = {
            "event_name": event_name,
            "action_source": action_source,
            "event_time": event_time_s,
            "event_id": event_id,
            "user_data": rule.user_data(record),
        }
        left_out: list[tuple[str, str]] = []  # custom_data and top-level fields left out
        custom = rule.custom_data(record, left_out)
        if opt_out_type is not None:
            custom["opt_out_type"] = opt_out_type
        if custom:
            event["custom_data"] = custom
        fields = rule.fields(record, left_out)
        if rule.nests_fields:  # app_info.<field> and device_info.<field> go into their objects
            for name, value in fields.items():
                info, dot, field_name = name.partition(".")
                if dot:
                    event.setdefault(info, {})[field_name] = value
                else:
                    event[name] = value
        elif fields:
            event.update(fields)
        if is_denied and opt_out_type is None:  # consent action opt_out
            event["opt_out"] = True
        return Conversion(
            coords,
            AdAccountId(ad_account),
            EventId(event_id),
            event_time_s,
            event_name,
            event,
            decoded.envelope,
            dropped=tuple(left_out),
        )
