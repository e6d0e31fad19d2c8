"""Python source generated once at start-up: a rule's tables, and one function per rule.

A rule's steps called one closure each (a path, a lookup, a format, a table, a template) cost
20 µs per order of the example mapping; the same steps as straight-line code, sharing the
record's levels (`customer` looked up once for the filters, user_data and all), 14 µs. So
`compile_rule_function` writes that code for each rule: plain record paths, `items[].sku`
arrays, lookups, sums of integers, filter conditions, text, decimals, integers and `contents`
items are read and checked inline; whatever else a value needs calls the closure `rules.py`
compiled for it, and every check a fast path does not settle calls the same function the
readable path calls (`required.py`, `values.py`). So the generated code decides nothing on its
own: `mapping.Mapper.apply_reference` says what a rule means, and `tests/test_codegen.py` holds
the two to the same events, skips and errors.

The source holds no text from the mapping except as repr()'d string constants of checked path
names; every other value (tables, constants, reasons) is bound by name in its namespace.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from consumer.conversion import required
from consumer.conversion.capi import ACTION_SOURCES, EVENT_NAMES
from consumer.conversion.extract import (
    EMPTY,
    Entry,
    Extractor,
    FormattedTable,
    Formatting,
    Predicate,
    Table,
    Template,
    lookup_table,
)
from consumer.conversion.required import MAX_REQUIRED_CHARS
from consumer.conversion.values import (
    MAX_EVENT_ID_CHARS,
    MAX_INT64,
    MAX_ITEMS,
    MAX_TEXT_CHARS,
    MIN_INT64,
    OutOfBounds,
    decimal_text,
)
from consumer.records import Conversion, Envelope, Skip

# apply(record, envelope, oldest_s, newest_s, event_name_of) → the event or a skip; raises
# PermanentError. `event_name_of` checks a name read from the record (`Mapper.event_name`).
RuleFunction = Callable[[Any, Envelope, int, int, Callable[[object], str]], Conversion | Skip]

# Value specs read by their closure alone (`const` inline), in `compile_value`'s order.
_CLOSURE_ONLY: Final = ("const", "template", "first", "count")
_NOT_FOUND: Final = object()  # a lookup miss: the lookup's closure decides (default or error)
# Not `value != []`, which builds a list for every value.
_KEEP: Final = "value is not None and (type(value) is not list or value)"


class _Source:
    """Generated lines and the namespace they run in."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.namespace: dict[str, Any] = {
            "_EMPTY": EMPTY,
            "_NOT_FOUND": _NOT_FOUND,
            "OutOfBounds": OutOfBounds,
            "MAX_TEXT_CHARS": MAX_TEXT_CHARS,
            "MAX_ITEMS": MAX_ITEMS,
            "MAX_EVENT_ID_CHARS": MAX_EVENT_ID_CHARS,
            "MAX_REQUIRED_CHARS": MAX_REQUIRED_CHARS,
            "MIN_INT64": MIN_INT64,
            "MAX_INT64": MAX_INT64,
            "ACTION_SOURCES": ACTION_SOURCES,
            "decimal_text": decimal_text,
            "datetime": dt.datetime,
            "required": required,
            "Conversion": Conversion,
            "Skip": Skip,
        }
        self._names = 0

    def name(self, hint: str) -> str:
        """A local name not used before."""
        self._names += 1
        return f"{hint}_{self._names}"

    def bind(self, value: object, hint: str) -> str:
        """A global name for `value` in the generated code."""
        name = self.name(hint)
        self.namespace[name] = value
        return name

    def add(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)

    def function(self, name: str) -> Any:
        exec("\n".join(self.lines), self.namespace)
        return self.namespace[name]


class _Scope:
    """Where generated code reads a record: `subject` is what closures are called with, `root`
    the variable holding it as a dict (or `_EMPTY`), `levels` the objects under it already
    looked up; its lines are written at `indent`."""

    def __init__(self, source: _Source, subject: str, root: str, indent: int) -> None:
        self.source, self.subject, self.indent = source, subject, indent
        self.levels: dict[tuple[str, ...], str] = {(): root}

    def add(self, line: str, deeper: int = 0) -> None:
        self.source.add(self.indent + deeper, line)

    def level(self, parts: tuple[str, ...]) -> str:
        """The variable holding the object at `parts` (`_EMPTY` when it is not one)."""
        if parts not in self.levels:
            parent = self.level(parts[:-1])
            name = self.levels[parts] = self.source.name("level")
            self.add(f"{name} = {parent}.get({parts[-1]!r})")
            self.add(f"if type({name}) is not dict: {name} = _EMPTY")
        return self.levels[parts]


def _plain(spec: object) -> tuple[str, ...] | None:
    """A record path without arrays, as its parts."""
    if isinstance(spec, str) and "[]" not in spec:
        return tuple(spec.split("."))
    return None


def _array_field(spec: object) -> tuple[tuple[str, ...], str, str] | None:
    """`items[].sku` (one array, a field of its objects, within three levels: the paths
    `extract.compile_path` reads with `_compile_each`) as (parent parts, array name, field)."""
    if not isinstance(spec, str):
        return None
    parts = tuple(spec.split("."))
    arrays = [i for i, part in enumerate(parts) if part.endswith("[]")]
    if len(arrays) != 1 or arrays[0] >= 3 or len(parts) != arrays[0] + 2:
        return None
    at = arrays[0]
    return parts[:at], parts[at][:-2], parts[at + 1]


def _read(scope: _Scope, spec: object, extractor: Extractor, target: str) -> None:
    """Lines that set `target` to what `extractor` returns for the scope's record."""
    if (parts := _plain(spec)) is not None:
        scope.add(f"{target} = {scope.level(parts[:-1])}.get({parts[-1]!r})")
        return
    if (array := _array_field(spec)) is not None:
        parent, name, field = array
        scope.add(f"{target} = {scope.level(parent)}.get({name!r})")
        scope.add(
            f"{target} = [_leaf for _row in {target} if type(_row) is dict and "
            f"(_leaf := _row.get({field!r})) is not None] if type({target}) is list else None"
        )
        return
    call = f"{scope.source.bind(extractor, 'extract')}({scope.subject})"
    if not isinstance(spec, Mapping) or any(k in spec for k in _CLOSURE_ONLY):
        if isinstance(spec, Mapping) and "const" in spec:  # `compile_value` asks this first
            scope.add(f"{target} = {scope.source.bind(spec['const'], 'constant')}")
        else:
            scope.add(f"{target} = {call}")
    elif "sum" in spec:
        if _array_field(spec["sum"]) is None:
            scope.add(f"{target} = {call}")
            return
        # Integers (quantities) summed here; anything else goes to the closure, which reads
        # the record again and knows floats, Decimals and what fails.
        _read(scope, spec["sum"], extractor, target)
        whole = scope.source.name("whole")
        scope.add(f"if {target} is not None:")
        scope.add(f"{whole} = 0", 1)
        scope.add(f"for _number in {target}:", 1)
        scope.add("if type(_number) is not int:", 2)
        scope.add(f"{target} = {call}", 3)
        scope.add("break", 3)
        scope.add(f"{whole} += _number", 2)
        scope.add("else:", 1)
        scope.add(f"{target} = {whole}", 2)
    elif "field" not in spec:  # an operator only its closure knows
        scope.add(f"{target} = {call}")
    elif "map" in spec and _plain(spec["field"]) is not None:
        table = scope.source.bind(lookup_table(spec), "lookup")
        _read(scope, spec["field"], extractor, target)
        key = f"{target} if type({target}) is str else str({target})"
        found = f"{table}.get({key}, _NOT_FOUND)"
        scope.add(f"{target} = {found} if {target} is not None else _NOT_FOUND")
        scope.add(f"if {target} is _NOT_FOUND: {target} = {call}")
    elif "map" not in spec and (_plain(spec["field"]) or _array_field(spec["field"])):
        _read(scope, spec["field"], extractor, target)
        if "default" in spec:
            default = scope.source.bind(spec["default"], "default")
            scope.add(f"if {target} is None: {target} = {default}")
    else:
        scope.add(f"{target} = {call}")


def _condition(scope: _Scope, spec: object, predicate: Predicate) -> str:
    """An expression that is true where `predicate` (`extract.compile_condition` of `spec`) is:
    one test of a plain path is written inline, anything else calls `predicate`."""
    bind = scope.source.bind
    if not isinstance(spec, Mapping) or _plain(spec.get("field")) is None:
        return f"{bind(predicate, 'condition')}({scope.subject})"
    tested = scope.source.name("tested")
    if "equals" in spec:
        test = f"{tested} == {bind(spec['equals'], 'expected')}"
    elif "not_equals" in spec:
        test = f"{tested} != {bind(spec['not_equals'], 'unexpected')}"
    elif "in" in spec or "not_in" in spec:
        is_in = "in" in spec
        allowed = bind(frozenset(str(v) for v in spec["in" if is_in else "not_in"]), "allowed")
        test = f"(str({tested}) in {allowed}) == {is_in}"
    elif "exists" in spec:
        test = f"({tested} not in (None, '')) == {bool(spec['exists'])}"
    elif "matches" in spec:
        pattern = bind(re.compile(str(spec["matches"])), "pattern")
        test = f"isinstance({tested}, str) and bool({pattern}.search({tested}))"
    else:
        return f"{bind(predicate, 'condition')}({scope.subject})"
    _read(scope, spec["field"], predicate, tested)
    return test


Store = Callable[[str, str], str]  # (output name, value expression) → the statement storing it


def _columns(
    scope: _Scope,
    entries: Sequence[Entry],
    formatting: Sequence[Formatting] | None,
    store: Store,
    dropped: str,
) -> None:
    """Lines that read each entry, leave out None and [], and store it formatted."""
    for index, (name, spec, extractor) in enumerate(entries):
        _read(scope, spec, extractor, "value")
        if formatting is None:
            scope.add(f"if {_KEEP}: {store(name, 'value')}")
            continue
        scope.add(f"if {_KEEP}:")
        _formatted(scope, name, formatting[index], store, dropped)


def _formatted(
    scope: _Scope, name: str, formatting: Formatting, store: Store, dropped: str
) -> None:
    """Lines (one level in) that format `value` as `formatting` says and store it, or append
    to `dropped` why it is left out."""
    deeper = 1
    if formatting.text_as_is or formatting.inline == "integer":
        kept = (
            "type(value) is str and len(value) <= MAX_TEXT_CHARS"
            if formatting.text_as_is
            else "type(value) is int and MIN_INT64 <= value <= MAX_INT64"
        )
        scope.add(f"if {kept}:", deeper)
        scope.add(store(name, "value"), deeper + 1)
        scope.add("else:", deeper)
        deeper += 1
    if formatting.inline == "texts":  # all of them text already: kept as they are (a copy)
        scope.add("texts = type(value) is list and len(value) <= MAX_ITEMS", deeper)
        scope.add("if texts:", deeper)
        scope.add("for _text in value:", deeper + 1)
        scope.add("if type(_text) is not str or len(_text) > MAX_TEXT_CHARS:", deeper + 2)
        scope.add("texts = False", deeper + 3)
        scope.add("break", deeper + 3)
        scope.add("if texts:", deeper)
        scope.add(store(name, "list(value)"), deeper + 1)
        scope.add("else:", deeper)
        deeper += 1
    if formatting.rows is not None:
        _contents(scope, name, formatting, store, dropped, deeper)
        return
    if formatting.inline == "decimal":
        call = "decimal_text(value)"
    else:
        call = f"{scope.source.bind(formatting.format, 'format')}(value, {dropped})"
    scope.add("try:", deeper)
    scope.add(f"value = {call}", deeper + 1)
    scope.add("except OutOfBounds as exc:", deeper)
    scope.add(f"{dropped}.append(({formatting.drop_name!r}, exc.reason))", deeper + 1)
    scope.add("else:", deeper)
    scope.add(f"if value is not None: {store(name, 'value')}", deeper + 1)


def _contents(
    scope: _Scope, name: str, formatting: Formatting, store: Store, dropped: str, deeper: int
) -> None:
    """`contents` built in one loop: `formats.contents_formatting`'s `as_contents` with the
    item table's lines inside it."""
    assert formatting.rows is not None
    entries, item_formatting = formatting.rows
    source = scope.source
    rows, row, item, built = (source.name(n) for n in ("rows", "row", "item", "items"))
    scope.add(f"{rows} = value if type(value) is list else [value]", deeper)
    scope.add(f"if len({rows}) > MAX_ITEMS:", deeper)
    scope.add(f"{dropped}.append(({formatting.drop_name!r}, 'too_long'))", deeper + 1)
    scope.add("else:", deeper)
    scope.add(f"{built} = []", deeper + 1)
    scope.add(f"for {row} in {rows}:", deeper + 1)
    scope.add(f"if type({row}) is dict:", deeper + 2)
    inner = _Scope(source, row, row, scope.indent + deeper + 3)
    inner.add(f"{item} = {{}}")
    _columns(inner, entries, item_formatting, lambda n, v: f"{item}[{n!r}] = {v}", dropped)
    inner.add(f"if {item}: {built}.append({item})")
    scope.add(f"if {built}: {store(name, built)}", deeper + 1)


def _table(entries: Sequence[Entry], formatting: Sequence[Formatting] | None) -> Any:
    source = _Source()
    source.add(0, "def table(record, dropped=None):")
    source.add(1, "out = {}")
    source.add(1, "level_0 = record if type(record) is dict else _EMPTY")
    scope = _Scope(source, "record", "level_0", 1)
    _columns(scope, entries, formatting, lambda n, v: f"out[{n!r}] = {v}", "dropped")
    source.add(1, "return out")
    return source.function("table")


def compile_table(entries: Sequence[Entry]) -> Table:
    """One function building {name: value} for (name, spec, extractor) entries, leaving out
    None and [] (a rule's user_data; custom_data and top-level fields are formatted tables)."""
    table: Table = _table(entries, None)
    return table


def compile_formatted_table(
    entries: Sequence[Entry], formatting: Sequence[Formatting]
) -> FormattedTable:
    """`compile_table` whose values are formatted as they are read, one `Formatting` per
    entry (a rule's custom_data and top-level fields: `formats.py`); `table(record, dropped)`."""
    if len(formatting) != len(entries):
        raise ValueError("one Formatting per entry")
    table: FormattedTable = _table(entries, formatting)
    return table


def compile_rule_function(
    *,
    filters: Sequence[tuple[str, Predicate, object]],
    consent: tuple[Extractor, str, str, list[object]] | None,
    event_name: tuple[object, Extractor, str | None],
    action_source: tuple[object, Extractor, str | None],
    ad_account: tuple[object, Extractor, str | None],
    event_time: tuple[object, Extractor, str],
    event_id: Template,
    user_data: Sequence[Entry],
    custom_data: tuple[Sequence[Entry], Sequence[Formatting]],
    fields: tuple[Sequence[Entry], Sequence[Formatting]],
) -> RuleFunction:
    """The function applying one rule (`Mapper.apply_reference`'s steps). A filter is (reason,
    predicate, its condition spec); a required field (spec, extractor, its constant or None);
    `consent` (the reader of its field, action, the field's path, the denied values)."""
    source = _Source()
    source.add(0, "def apply(record, envelope, oldest_s, newest_s, event_name_of):")
    source.add(1, "coords = envelope.coords")
    source.add(1, "level_0 = record if type(record) is dict else _EMPTY")
    scope = _Scope(source, "record", "level_0", 1)
    for reason, matches, condition in filters:
        test = _condition(scope, condition, matches)
        scope.add(f"if {test}: return Skip(coords, {source.bind(f'filter.{reason}', 'reason')})")
    action = None
    if consent is not None:
        read, action, path, denied_values = consent
        _read(scope, path, read, "is_denied")
        denied = f"is_denied in {source.bind(denied_values, 'denied')}"
        if action == "drop":
            scope.add(f"if {denied}: return Skip(coords, 'consent.denied')")
        else:
            scope.add(f"is_denied = {denied}")

    if _required_field(scope, event_name, "event_name") not in EVENT_NAMES:
        scope.add("event_name = event_name_of(event_name)")  # a custom name counts each time

    if _required_field(scope, action_source, "action_source") is None:
        scope.add("if not (type(action_source) is str and action_source in ACTION_SOURCES):")
        scope.add("action_source = required.action_source(action_source)", 1)

    if _required_field(scope, ad_account, "ad_account") is None:
        scope.add(
            "if not (type(ad_account) is str and len(ad_account) <= MAX_REQUIRED_CHARS"
            " and ad_account.isascii() and ad_account.isdigit()):"
        )
        scope.add("ad_account = required.ad_account(ad_account)", 1)

    spec, extractor, unit = event_time
    _read(scope, spec, extractor, "event_time")
    scope.add("if type(event_time) is datetime and event_time.tzinfo is not None:")
    scope.add("event_time_s = int(event_time.timestamp())", 1)
    scope.add("if not oldest_s <= event_time_s <= newest_s:", 1)
    scope.add("required.within_window(event_time_s, oldest_s, newest_s)", 2)
    scope.add("else:")
    time_unit = source.bind(unit, "unit")
    scope.add(f"event_time_s = required.event_time(event_time, {time_unit}, oldest_s, newest_s)", 1)

    template = source.bind(event_id, "template")
    rendered = f"required.event_id({template}.render(record, {{'event_name': event_name}}))"
    if event_id.whole_field is not None:
        name, extractor = event_id.whole_field
        _read(scope, name, extractor, "event_id")
        scope.add(
            "if not (type(event_id) is str and event_id and len(event_id) <= MAX_EVENT_ID_CHARS):"
        )
        scope.add(f"event_id = {rendered}", 1)
    else:
        scope.add(f"event_id = {rendered}")

    scope.add("user_data = {}")
    _columns(scope, user_data, None, lambda n, v: f"user_data[{n!r}] = {v}", "dropped")
    scope.add(
        "event = {'event_name': event_name, 'action_source': action_source,"
        " 'event_time': event_time_s, 'event_id': event_id, 'user_data': user_data}"
    )
    scope.add("dropped = []")
    scope.add("custom = {}")
    entries, formatting = custom_data
    _columns(scope, entries, formatting, lambda n, v: f"custom[{n!r}] = {v}", "dropped")
    if action == "limited_data_processing":
        scope.add("if is_denied: custom['opt_out_type'] = 'LDP'")
    scope.add("if custom: event['custom_data'] = custom")
    entries, formatting = fields
    _columns(scope, entries, formatting, _store_field, "dropped")
    if action == "opt_out":
        scope.add("if is_denied: event['opt_out'] = True")
    scope.add(
        "return Conversion(coords, ad_account, event_id, event_time_s, event_name, event,"
        " envelope, None, tuple(dropped))"
    )
    function: RuleFunction = source.function("apply")
    return function


def _required_field(
    scope: _Scope, field: tuple[object, Extractor, str | None], target: str
) -> str | None:
    """Lines setting `target` to a required field as read; returns the constant the rule
    gives for it (checked when the rule was compiled), or None when the value is to be
    checked here. A constant past the length limit fails every event, so it is read through
    its closure and checked like any value, as the readable path does."""
    spec, extractor, constant = field
    if constant is not None and len(constant) <= MAX_REQUIRED_CHARS:
        scope.add(f"{target} = {scope.source.bind(constant, target)}")
        return constant
    if constant is not None:
        scope.add(f"{target} = {scope.source.bind(extractor, 'extract')}({scope.subject})")
    else:
        _read(scope, spec, extractor, target)
    return None


def _store_field(name: str, value: str) -> str:
    """A top-level field, or `app_info.<field>` and `device_info.<field>` into their objects."""
    info, dot, field_name = name.partition(".")
    if dot:
        return f"event.setdefault({info!r}, {{}})[{field_name!r}] = {value}"
    return f"event[{name!r}] = {value}"
