"""The fields every event must have, read from a record and checked (pure).

Event name, action source, ad account, event time and event id: a value that cannot be one
raises `PermanentError` naming the field (dead-letter). Both ways a rule is applied use these,
the readable one (`mapping.Mapper.apply_reference`) and the generated one (`codegen.py`), which
calls them whenever its inline fast path does not hold. Change a required field's check here.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Final, Literal

from consumer.conversion.capi import ACTION_SOURCES
from consumer.conversion.values import MAX_EVENT_ID_CHARS, OutOfBounds, text
from consumer.errors import PermanentError
from consumer.records import is_ad_account_id

TimeUnit = Literal["auto", "seconds", "millis", "micros", "iso8601"]
_DIVISORS: Final = {"seconds": 1, "millis": 1000, "micros": 1_000_000}
# Text limit of a required field (the name, source and account have their own rules after).
MAX_REQUIRED_CHARS: Final = 1000


def event_time_seconds(value: object, unit: TimeUnit) -> int:
    """Unix seconds from an Avro timestamp (datetime), an integer in `unit`, or ISO-8601 text."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return int(value.timestamp())
    if isinstance(value, int | float) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            raise PermanentError("map.bad_event_time", "event_time is not a finite number")
        number = int(value)
        if unit == "auto":
            unit = "micros" if number > 10**14 else "millis" if number > 10**11 else "seconds"
        divisor = _DIVISORS.get(unit)
        if divisor is not None:
            return number // divisor
    if isinstance(value, str) and unit in ("auto", "iso8601") and len(value) <= 64:
        try:
            parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise PermanentError("map.bad_event_time", "event_time is not ISO-8601") from None
        return event_time_seconds(parsed, "auto")
    raise PermanentError("map.bad_event_time", f"event_time does not fit unit {unit}")


def required_text(value: object, name: str) -> str:
    """A required text field (event name, action source, ad account), or `PermanentError`
    naming it; its own rule (a name, a source, an account id) is checked after."""
    if value is None or value == "":
        raise PermanentError("map.missing_field", f"{name} is missing")
    if type(value) is str and len(value) <= MAX_REQUIRED_CHARS:
        return value
    try:
        return text(value, MAX_REQUIRED_CHARS)
    except OutOfBounds as exc:
        raise PermanentError(f"map.{exc.reason}", f"{name} is {exc.reason}") from None


def action_source(value: object) -> str:
    source = required_text(value, "action_source")
    if source not in ACTION_SOURCES:
        raise PermanentError("map.bad_action_source", "action_source is not one Pinterest accepts")
    return source


def ad_account(value: object) -> str:
    account = required_text(value, "ad_account")
    if not is_ad_account_id(account):
        raise PermanentError("map.bad_ad_account", "ad_account is not a numeric ad account id")
    return account


def event_id(rendered: str) -> str:
    if len(rendered) > MAX_EVENT_ID_CHARS:
        raise PermanentError("map.too_long", f"event_id is over {MAX_EVENT_ID_CHARS} characters")
    return rendered


def event_time(value: object, unit: TimeUnit, oldest_s: int, newest_s: int) -> int:
    """The event time in Unix seconds, within [oldest_s, newest_s] (the mapping's
    `max_event_age` and `max_future_skew` around now)."""
    if value is None:
        raise PermanentError("map.missing_field", "event_time is missing")
    return within_window(event_time_seconds(value, unit), oldest_s, newest_s)


def within_window(seconds: int, oldest_s: int, newest_s: int) -> int:
    if seconds < oldest_s:
        raise PermanentError("map.event_too_old", "event_time is older than max_event_age")
    if seconds > newest_s:
        raise PermanentError("map.event_in_future", "event_time is in the future")
    return seconds
