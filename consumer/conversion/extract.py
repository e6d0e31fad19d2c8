"""Value extractors for mapping rules: record paths, value specs, templates and conditions.

Each `compile_*` checks one piece of the mapping YAML (raising `ConfigError` naming its key) and
returns a closure that reads a decoded record (a plain dict) at run time. Closures never raise
except `PermanentError` for data a rule cannot use (an unmapped lookup value, a template field
that is missing). Change how a value is read from a record here: a new value operator (beside
`first`, `count`, `sum`) is one branch of `compile_value` and its test in `tests/test_extract.py`
(and its shape in `mapping_schema.py`). Which values a rule reads is `rules.py`, what the event
is made of is `mapping.py`, whether a value fits its field is `values.py`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Final, Literal

from consumer.conversion.values import OutOfBounds, text
from consumer.errors import ConfigError, PermanentError

Extractor = Callable[[Mapping[str, Any]], Any]
Predicate = Callable[[Mapping[str, Any]], bool]
Table = Callable[[Mapping[str, Any]], dict[str, Any]]
Dropped = list[tuple[str, str]]  # (field, reason) of each value a table left out
FormattedTable = Callable[[Mapping[str, Any], Dropped], dict[str, Any]]
Format = Callable[[Any, Dropped], Any]  # a value → its API type; raises OutOfBounds

_MISSING: Final = object()
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][\w.\[\]]*)\}")


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


def path_parts(path: object, key: str) -> tuple[str, ...]:
    """The dotted parts of a record path (`items[].sku` → ('items[]', 'sku'))."""
    if not isinstance(path, str) or not path or any(not p for p in path.split(".")):
        raise ConfigError(key, f"expected a record path such as customer.email, got {path!r}")
    return tuple(path.split("."))


def compile_path(path: object, key: str) -> Extractor:
    parts = path_parts(path, key)
    arrays = [i for i, part in enumerate(parts) if part.endswith("[]")]
    if len(arrays) == 1 and len(parts) - arrays[0] <= 2 and arrays[0] < 3:
        return _compile_each(parts, arrays[0])
    if arrays or len(parts) > 3:
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


def _compile_each(parts: tuple[str, ...], at: int) -> Extractor:
    """`items[]` or `items[].sku` (the common array paths) without `_walk`'s recursion."""
    get_items = compile_path(".".join((*parts[:at], parts[at][:-2])), "")
    if at == len(parts) - 1:

        def each(record: Mapping[str, Any]) -> Any:
            items = get_items(record)
            return [v for v in items if v is not None] if type(items) is list else None

        return each
    leaf = parts[at + 1]

    def each_field(record: Mapping[str, Any]) -> Any:
        items = get_items(record)
        if type(items) is not list:
            return None
        return [v for item in items if type(item) is dict and (v := item.get(leaf)) is not None]

    return each_field


def lookup_table(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A `{field, map}` spec's table, by the record value's text."""
    return {str(k): v for k, v in spec["map"].items()}


def _compile_lookup(spec: Mapping[str, Any], key: str, base: Extractor) -> Extractor:
    if not isinstance(spec["map"], Mapping):
        raise ConfigError(f"{key}.map", "expected a table of record value → output value")
    lookup = lookup_table(spec)
    default = spec.get("default", _MISSING)

    def extract(record: Mapping[str, Any]) -> Any:
        raw = base(record)
        if raw is None:
            return None if default is _MISSING else default
        found = lookup.get(raw if type(raw) is str else str(raw), default)
        if found is _MISSING:
            raise PermanentError("map.unmapped_value", f"{key}: no entry for a record value")
        return found

    return extract


def _whole(value: int | float | Decimal) -> int:
    if isinstance(value, Decimal) and value.is_finite() and value.adjusted() > 19:
        raise OverflowError  # int(Decimal("1e999999999")) would be a billion digits
    return int(value)


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
        template = compile_template(spec["template"], f"{key}.template")
        return lambda record: template.render(record, {})
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
            whole = 0
            for value in values:  # quantities, the common case: ints, summed without a generator
                if type(value) is not int:
                    break
                whole += value
            else:
                return whole
            try:
                return sum(_whole(v) for v in values if isinstance(v, int | float | Decimal))
            except (OverflowError, ValueError, InvalidOperation):  # inf, nan
                raise PermanentError("map.bad_number", f"{key}: not a finite number") from None

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


@dataclass(frozen=True, slots=True)
class Template:
    """'{order_id}:{event_name}', split once into literal text and the fields it reads."""

    text: str
    # split() alternates literal text and placeholder names: text, name, text, name, text.
    pieces: tuple[str, ...]
    fields: tuple[tuple[str, Extractor], ...]
    # The whole text is this one record field ('{order_id}', the usual event id): rendered
    # without the join.
    whole_field: tuple[str, Extractor] | None = None

    def render(self, record: Mapping[str, Any], extra: Mapping[str, str]) -> str:
        """Raises `PermanentError` when a field the template reads is missing or empty."""
        if self.whole_field is not None:
            return _field_text(*self.whole_field, record)
        values = dict(extra)
        for name, extractor in self.fields:
            values[name] = _field_text(name, extractor, record)
        return "".join(values[p] if i % 2 else p for i, p in enumerate(self.pieces))


def _field_text(name: str, extractor: Extractor, record: Mapping[str, Any]) -> str:
    value = extractor(record)
    if value is None or value == "":
        raise PermanentError("map.missing_field", f"template field {name} is missing")
    if type(value) is str:
        return value
    try:
        return text(value)
    except OutOfBounds as exc:
        raise PermanentError(
            f"map.{exc.reason}", f"template field {name} is {exc.reason}"
        ) from None


def compile_template(
    template: object, key: str, provided: frozenset[str] = frozenset()
) -> Template:
    """`provided` names placeholders the caller fills itself (not read from the record)."""
    if not isinstance(template, str) or not template:
        raise ConfigError(key, "expected a template string such as '{order_id}:checkout'")
    literal = _PLACEHOLDER.sub("", template)
    if "{" in literal or "}" in literal:
        raise ConfigError(key, f"malformed placeholder in {template!r}")
    fields = tuple(
        (name, compile_path(name, f"{key}{{{name}}}"))
        for name in _PLACEHOLDER.findall(template)
        if name not in provided
    )
    pieces = tuple(_PLACEHOLDER.split(template))
    is_one_field = len(pieces) == 3 and not pieces[0] and not pieces[2] and len(fields) == 1
    return Template(template, pieces, fields, fields[0] if is_one_field else None)


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


EMPTY: Final[dict[str, Any]] = {}  # stands in for a missing or non-object level; never written
Entry = tuple[str, object, Extractor]  # (output name, the value's spec, its extractor)


@dataclass(frozen=True, slots=True)
class Formatting:
    """How a formatted table puts one value into the API's type: `format(value, dropped)`
    returns it (None: leave the field out, nothing to say) or raises `OutOfBounds`, and the
    field is left out with `(drop_name, reason)` appended to `dropped`; a `PermanentError` it
    raises fails the event (the table does not catch it)."""

    format: Format
    drop_name: str
    # Text within MAX_TEXT_CHARS is kept as it is without calling `format` (most fields).
    text_as_is: bool = False
    # What generated code may call or check instead of `format` (`codegen.py`), one Python call
    # less per value: "decimal" (format is `values.decimal_text`), "integer" (`values.integer`:
    # an int within 64 bits is kept as it is), "texts" (an array of text within the limits is
    # kept as it is).
    inline: Literal["", "decimal", "integer", "texts"] = ""
    # `contents`: the table each of its objects goes through, as (entries, formatting), so
    # generated code builds the items in one loop rather than a table call per item.
    rows: tuple[tuple[Entry, ...], tuple[Formatting, ...]] | None = None
