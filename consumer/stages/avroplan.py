"""A parsed Avro writer schema turned into the plan the compiled decoder (`capi_native`) walks.

The plan is nested tuples `(kind, *args)`; the kinds are shared with native/src/lib.rs. A schema
the compiled decoder cannot read exactly as fastavro does (recursive types, logical types it
does not build: uuid, time-of-day; decimals wider than 38 digits) has no plan, and fastavro
decodes it. Without the `capi_native` extension every schema is decoded by fastavro.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from fastavro.read import LOGICAL_READERS

try:
    from capi_native import Plan
except ImportError:  # the extension is optional: fastavro reads everything without it
    Plan = None  # type: ignore[assignment, misc]

__all__ = [
    "DECODER_MODES",
    "HAS_COMPILED_DECODER",
    "Plan",
    "compiled_decoder",
    "decoder_in_use",
    "plan_for",
]
HAS_COMPILED_DECODER = Plan is not None
# CAPI_AVRO_DECODER: `auto` uses the compiled decoder when it is installed; `fastavro` never
# does (a way out should the compiled path ever misbehave); `native` requires it.
DECODER_MODES = ("auto", "native", "fastavro")


def decoder_in_use(mode: str | None = None) -> str:
    """ "compiled" or "fastavro" for a mode; None: CAPI_AVRO_DECODER as `config` reads it, so
    what is built without a configuration (transform, the benchmark, tests) follows it too."""
    if mode is None:
        mode = os.environ.get("CAPI_AVRO_DECODER", "auto").strip().lower()
    return "compiled" if HAS_COMPILED_DECODER and mode != "fastavro" else "fastavro"


NULL, BOOLEAN, LONG, FLOAT, DOUBLE, BYTES, STRING = range(7)
RECORD, ENUM, ARRAY, MAP, UNION, FIXED, DECIMAL, TIMESTAMP, DATE = range(7, 16)
MAX_DECIMAL_DIGITS = 38  # what an i128 holds

_PRIMITIVES: dict[str, tuple[Any, ...]] = {
    "null": (NULL,),
    "boolean": (BOOLEAN,),
    "int": (LONG,),  # fastavro reads an int as a varint of any width, like a long
    "long": (LONG,),
    "float": (FLOAT,),
    "double": (DOUBLE,),
    "bytes": (BYTES,),
    "string": (STRING,),
}
# Logical types the compiled decoder builds the same Python values for as fastavro does.
_DATES_AND_TIMES = {
    "long-timestamp-millis": (TIMESTAMP, 1000, True),
    "long-timestamp-micros": (TIMESTAMP, 1, True),
    "long-local-timestamp-millis": (TIMESTAMP, 1000, False),
    "long-local-timestamp-micros": (TIMESTAMP, 1, False),
    "int-date": (DATE,),
}


class _NoPlan(Exception):
    pass


def compiled_decoder(schema: Any, mode: str | None = None) -> Plan | None:
    """The compiled decoder for a parsed writer schema, or None where fastavro must read it
    (the schema has no plan, or `mode` says fastavro)."""
    if Plan is None or decoder_in_use(mode) != "compiled":
        return None
    plan = plan_for(schema)
    return Plan(plan) if plan is not None else None


def plan_for(schema: Any) -> tuple[Any, ...] | None:
    """The plan for a parsed (fastavro.parse_schema) writer schema, or None."""
    named = schema.get("__named_schemas", {}) if isinstance(schema, dict) else {}
    try:
        return _plan(schema, named, frozenset())
    except _NoPlan:
        return None


def _plan(schema: Any, named: Mapping[str, Any], enclosing: frozenset[str]) -> tuple[Any, ...]:
    if isinstance(schema, str):
        if schema in _PRIMITIVES:
            return _PRIMITIVES[schema]
        if schema in enclosing or schema not in named:
            raise _NoPlan(schema)  # recursive, or a name we were not given
        return _plan(named[schema], named, enclosing)
    if isinstance(schema, list):
        return (UNION, tuple(_plan(branch, named, enclosing) for branch in schema))
    if not isinstance(schema, dict):
        raise _NoPlan(repr(schema))
    kind = schema.get("type")
    if not isinstance(kind, str) or (kind not in _PRIMITIVES and kind in named):
        return _plan(kind, named, enclosing)
    logical = schema.get("logicalType")
    if logical is not None and f"{kind}-{logical}" in LOGICAL_READERS:
        return _logical(f"{kind}-{logical}", schema)
    if kind in _PRIMITIVES:
        return _PRIMITIVES[kind]
    if kind in ("record", "error"):
        inner = enclosing | {str(schema.get("name"))}
        fields = schema["fields"]
        return (
            RECORD,
            tuple(str(field["name"]) for field in fields),
            tuple(_plan(field["type"], named, inner) for field in fields),
        )
    if kind == "enum":
        return (ENUM, tuple(str(symbol) for symbol in schema["symbols"]))
    if kind == "array":
        return (ARRAY, _plan(schema["items"], named, enclosing))
    if kind == "map":
        return (MAP, _plan(schema["values"], named, enclosing))
    if kind == "fixed":
        return (FIXED, int(schema["size"]))
    raise _NoPlan(kind)


def _logical(name: str, schema: Mapping[str, Any]) -> tuple[Any, ...]:
    if name in _DATES_AND_TIMES:
        return _DATES_AND_TIMES[name]
    if name in ("bytes-decimal", "fixed-decimal"):
        precision = int(schema["precision"])
        scale = int(schema.get("scale", 0))
        if not 0 <= scale <= precision <= MAX_DECIMAL_DIGITS:
            raise _NoPlan(name)
        size = int(schema["size"]) if name == "fixed-decimal" else None
        return (DECIMAL, size, precision, scale)
    raise _NoPlan(name)  # uuid, time-of-day: fastavro builds those
