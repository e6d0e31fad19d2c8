from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.conversion.codegen import compile_table
from consumer.conversion.extract import _walk, compile_path, compile_template, compile_value
from consumer.errors import ConfigError, PermanentError

NAMES = st.sampled_from(["a", "b", "c", "it's", "x.y"])
values: st.SearchStrategy[Any] = st.recursive(
    st.one_of(st.none(), st.integers(), st.text(max_size=3), st.just([]), st.booleans()),
    lambda children: st.one_of(
        st.lists(children, max_size=2), st.dictionaries(NAMES, children, max_size=3)
    ),
    max_leaves=12,
)
paths = st.lists(st.sampled_from(["a", "b", "c", "it's"]), min_size=1, max_size=4).map(".".join)


@settings(max_examples=300, deadline=None)
@given(st.lists(paths, min_size=1, max_size=6), values)
def test_generated_table_reads_what_each_path_reads(specs: list[str], record: Any) -> None:
    """The straight-line table and the one-path-at-a-time extractors agree on any record."""
    entries = [(f"out{i}", spec, compile_path(spec, "k")) for i, spec in enumerate(specs)]
    expected = {
        name: value
        for name, _, extract in entries
        if (value := extract(record)) is not None and value != []
    }
    assert compile_table(entries)(record) == expected


def test_table_calls_extractors_for_other_specs_in_order() -> None:
    spec = {"template": "{a}-{b}"}
    entries = [
        ("first", "a", compile_path("a", "k")),
        ("joined", spec, compile_value(spec, "k")),
        ("items", "list[]", compile_path("list[]", "k")),
    ]
    table = compile_table(entries)
    assert table({"a": "1", "b": 2, "list": [{"x": 1}]}) == {
        "first": "1",
        "joined": "1-2",
        "items": [{"x": 1}],
    }
    assert list(table({"a": "1", "b": 2, "list": [1]})) == ["first", "joined", "items"]
    with pytest.raises(PermanentError):
        table({"a": "1"})  # the template's field b is missing


def test_paths_that_look_like_code_stay_data() -> None:
    spec = "a') or __import__('os') or ('"
    table = compile_table([("x", spec, compile_path(spec, "k"))])
    assert table({spec: 1}) == {"x": 1}
    assert table({"a": 1}) == {}


@pytest.mark.parametrize("template", ["", "{", "a}", 3])
def test_malformed_templates_name_the_key(template: object) -> None:
    with pytest.raises(ConfigError) as error:
        compile_template(template, "rules[0].event_id")
    assert error.value.key == "rules[0].event_id"


array_paths = st.lists(
    st.sampled_from(["a", "b", "a[]", "b[]", "it's"]), min_size=1, max_size=4
).map(".".join)


@settings(max_examples=400, deadline=None)
@given(array_paths, values)
def test_compiled_paths_read_what_the_general_walk_reads(path: str, record: Any) -> None:
    """The specialised readers (one or two levels, one array) agree with the general walk."""
    assert compile_path(path, "k")(record) == _walk(record, tuple(path.split(".")))
