"""The mapping file's shape as a JSON Schema, built from the same field tables the compiler uses.

`check_mapping_shape` stops a wrong type, missing key or unknown key with a `ConfigError` naming
its path before the compiler reads the document. `python -m consumer.conversion.mapping_schema`
prints the schema that `schemas/mapping.schema.json` publishes for editors (yaml-language-server).
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Iterable
from functools import lru_cache
from typing import Any, Final

import jsonschema
import orjson

from consumer.conversion.capi import (
    ACTION_SOURCES,
    CONTENT_FIELDS,
    CUSTOM_EVENT_NAME,
    CUSTOM_FIELDS,
    EVENT_NAME_RULE,
    EVENT_NAMES,
    TOP_FIELD_NAMES,
)
from consumer.conversion.userdata import USER_DATA_FIELDS
from consumer.errors import ConfigError

# Events one rule may emit beside its own from one record (`also`): a handful is the use (an
# order and a custom event for it); more is a mapping that should be two topics' rules.
MAX_ALSO_EVENTS: Final = 10

_PATH = {"type": "string", "minLength": 1, "pattern": r"^[^.\s]+(\.[^.\s]+)*$",
         "description": "a record path: customer.email, items[].sku"}  # fmt: skip
_DURATION = {
    "description": "seconds, or a number with s, m, h or d",
    "anyOf": [
        {"type": "integer", "minimum": 0},
        {
            "type": "string",
            "pattern": r"^\s*\d+\s*[smhd]?\s*$",
            "description": "a duration such as 30s, 5m, 48h or 7d",
        },
    ],
}


def _closed(properties: dict[str, Any], required: Iterable[str] = (), **extra: Any) -> Any:
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
        **extra,
    }


def _value_spec() -> Any:
    ref = {"$ref": "#/$defs/value"}
    return {
        "description": "where a value comes from: a record path or one of the object forms",
        "anyOf": [
            _PATH,
            _closed({"field": _PATH, "map": {"type": "object"}, "default": {}}, ["field"]),
            _closed({"const": {}}, ["const"]),
            _closed({"template": {"type": "string", "minLength": 1}}, ["template"]),
            _closed({"first": {"type": "array", "items": ref, "minItems": 1}}, ["first"]),
            _closed({"count": _PATH}, ["count"]),
            _closed({"sum": _PATH}, ["sum"]),
        ],
    }


def _condition() -> Any:
    tests: dict[str, Any] = {
        "equals": {},
        "not_equals": {},
        "in": {"type": "array"},
        "not_in": {"type": "array"},
        "exists": {"type": "boolean"},
        "matches": {"type": "string"},
    }
    single = _closed({"field": _PATH, **tests}, ["field"], minProperties=2, maxProperties=2)
    return {"anyOf": [single, {"type": "array", "items": single, "minItems": 1}]}


def _fields_of(names: Iterable[str], value: Any) -> Any:
    return {
        "type": "object",
        "propertyNames": {"enum": sorted(names)},
        "additionalProperties": value,
    }


def _constant_or_value(allowed: Iterable[str] | None) -> Any:
    constant: Any = {"type": ["string", "integer"]}
    if allowed is not None:
        constant = {"enum": sorted(allowed)}
    return {"anyOf": [constant, {"$ref": "#/$defs/value"}]}


@lru_cache(maxsize=1)
def mapping_json_schema() -> dict[str, Any]:
    value = {"$ref": "#/$defs/value"}
    condition = {"$ref": "#/$defs/condition"}
    contents = _closed(
        {"each": _PATH, "fields": _fields_of(CONTENT_FIELDS, value)}, ["each", "fields"]
    )
    custom_data = _fields_of(CUSTOM_FIELDS, value)
    custom_data["properties"] = {"contents": contents}
    user_data = _fields_of((f.name for f in USER_DATA_FIELDS), value)
    user_data["properties"] = {
        f.name: {**value, "description": f.description} for f in USER_DATA_FIELDS
    }
    tests = _condition()["anyOf"][0]
    filter_ = {
        **tests,
        "description": "a condition with a reason; matching records are dropped as filter.<reason>",
        "properties": {**tests["properties"], "reason": {"type": "string", "minLength": 1}},
        "required": ["field", "reason"],
        "minProperties": 3,
        "maxProperties": 3,
    }
    event_name = {
        "anyOf": [
            {
                "type": "string",
                "pattern": f"^{CUSTOM_EVENT_NAME.pattern}$",
                "examples": sorted(EVENT_NAMES),
                "description": EVENT_NAME_RULE,
            },
            value,
        ]
    }
    event_id = {"type": "string", "minLength": 1}
    also = _closed(
        {
            "when": condition,
            "event_name": event_name,
            "event_id": event_id,
            "custom_data": custom_data,
        },
        ["event_name", "event_id"],
        description="one more event from the same record, sharing everything but these",
    )
    rule = _closed(
        {
            "name": {"type": "string"},
            "topic": {"type": "string", "minLength": 1},
            "topic_pattern": {"type": "string", "minLength": 1},
            "record": {"type": "string"},
            "when": condition,
            "event_name": event_name,
            "action_source": _constant_or_value(ACTION_SOURCES),
            "ad_account": _constant_or_value(None),
            "event_id": event_id,
            "event_time": {
                "anyOf": [
                    _PATH,
                    _closed(
                        {
                            "field": _PATH,
                            "unit": {"enum": ["auto", "seconds", "millis", "micros", "iso8601"]},
                        },
                        ["field"],
                    ),
                ]
            },
            "filters": {"type": "array", "items": filter_},
            "consent": _closed(
                {
                    "field": _PATH,
                    "denied_values": {"type": "array"},
                    "action": {"enum": ["drop", "opt_out", "limited_data_processing"]},
                },
                ["field"],
            ),
            "user_data": user_data,
            "custom_data": custom_data,
            "fields": _fields_of(TOP_FIELD_NAMES, value),
            "also": {"type": "array", "items": also, "maxItems": MAX_ALSO_EVENTS},
        },
        ["event_name", "action_source", "ad_account", "event_id", "event_time"],
    )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "capi-consumer mapping: Kafka records to Pinterest conversion events",
        **_closed(
            {
                "defaults": _closed(
                    {
                        "default_phone_country": {"type": "string", "pattern": "^[A-Za-z]{2}$"},
                        "dob_order": {"enum": ["mdy", "dmy"]},
                        "max_event_age": _DURATION,
                        "max_future_skew": _DURATION,
                    }
                ),
                "topics": {"type": "array", "items": {"$ref": "#/$defs/rule"}, "minItems": 1},
            },
            ["topics"],
        ),
        "$defs": {
            "value": _value_spec(),
            "condition": _condition(),
            "rule": rule,
        },
    }


def _where(path: deque[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


_VALUE_FORMS = (
    "a record path or one of {field, map, default}, {const}, {template}, {first}, {count}, {sum}"
)


def _located(error: jsonschema.ValidationError) -> tuple[deque[str | int], str]:
    """Where the error is (as a path into the document) and what to tell the person."""
    path: deque[str | int] = deque(error.absolute_path)
    schema: Any = error.schema
    if "propertyNames" in error.absolute_schema_path:
        path.append(str(error.instance))
        return path, "not a field Pinterest accepts here; expected one of " + str(schema["enum"])
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = schema.get("properties", {})
        unknown = sorted(str(k) for k in error.instance if k not in allowed)
        path.append(unknown[0])
        return path, f"unknown key; expected one of {sorted(allowed)}"
    instance: Any = error.instance
    if error.validator == "required" and isinstance(error.validator_value, list):
        missing = [k for k in error.validator_value if k not in instance]
        path.append(missing[0])
        return path, "is required"
    if error.validator in ("anyOf", "oneOf"):
        if schema.get("$ref") == "#/$defs/value" or "value" in str(schema.get("description")):
            return path, f"expected {_VALUE_FORMS}, got {error.instance!r}"
        if "description" in schema:
            return path, f"expected {schema['description']}, got {error.instance!r}"
        return path, f"{error.instance!r} is not a valid value here"
    if error.validator == "maxItems" and isinstance(error.instance, list):
        return path, f"at most {error.validator_value} entries, got {len(error.instance)}"
    if error.validator == "pattern" and "description" in schema:
        return path, f"expected {schema['description']}, got {error.instance!r}"
    return path, str(error.message)


def check_mapping_shape(document: object, key: str) -> None:
    """Raise `ConfigError` naming the path of the first shape error in a parsed mapping."""
    validator = jsonschema.Draft202012Validator(mapping_json_schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(document))
    if error is not None:
        path, message = _located(error)
        raise ConfigError(f"{key}{_where(path)}", message)


if __name__ == "__main__":
    sys.stdout.write(orjson.dumps(mapping_json_schema(), option=orjson.OPT_INDENT_2).decode())
    sys.stdout.write("\n")
