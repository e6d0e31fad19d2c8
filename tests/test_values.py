from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.conversion.values import (
    MAX_INT64,
    OutOfBounds,
    decimal_text,
    integer,
    items,
    text,
)


@pytest.mark.parametrize(("value", "expected"), [
    (72.39, "72.39"), (Decimal("72.390"), "72.39"), ("72.39", "72.39"), (100, "100"),
    (0.1 + 0.2, "0.30000000000000004"), (1e-7, "0.0000001"), (Decimal("1E+3"), "1000"),
    ("-0.00", "0"), (" 5 ", "5"), ("1e17", "100000000000000000"),
    (Decimal("0E-999999999"), "0"), ("0e-999999999", "0"), (Decimal("-0E+50"), "0"),
    (Decimal("1.0000000000000000000001"), "1"),  # past 18 places: rounded, not refused
])  # fmt: skip
def test_decimal_text_plain_strings_without_float_artefacts(value: object, expected: str) -> None:
    assert decimal_text(value) == expected


@pytest.mark.parametrize(("value", "reason"), [
    (float("nan"), "invalid"), (float("inf"), "invalid"), ("NaN", "invalid"),
    ("1e999999999", "invalid"), ("1e400", "invalid"), ("1e-999999999", "invalid"),
    ("1e18", "invalid"), (10**40, "invalid"), ("abc", "wrong_type"), ("٣", "wrong_type"),
    ("²", "wrong_type"), (True, "wrong_type"), (None, "wrong_type"), (b"1", "wrong_type"),
])  # fmt: skip
def test_decimal_text_refuses_what_cannot_be_a_money_value(value: object, reason: str) -> None:
    with pytest.raises(OutOfBounds) as info:
        decimal_text(value)
    assert info.value.reason == reason


@pytest.mark.parametrize(("value", "expected"), [
    (3, 3), (3.0, 3), ("4", 4), (" -4 ", -4), ("+4", 4), (Decimal("7"), 7),
    (MAX_INT64, MAX_INT64), (str(MAX_INT64), MAX_INT64),
])  # fmt: skip
def test_integer_takes_64_bit_integers_in_any_plain_form(value: object, expected: int) -> None:
    assert integer(value) == expected


@pytest.mark.parametrize(("value", "reason"), [
    (2.5, "invalid"), (float("nan"), "invalid"), (float("inf"), "invalid"),
    (10**25, "invalid"), (MAX_INT64 + 1, "invalid"), ("1" * 25, "invalid"),
    (Decimal("1e999999999"), "invalid"), ("²", "wrong_type"), ("٣", "wrong_type"),
    ("3x", "wrong_type"), (True, "wrong_type"), ([1], "wrong_type"),
])  # fmt: skip
def test_integer_refuses_what_the_api_cannot_take(value: object, reason: str) -> None:
    with pytest.raises(OutOfBounds) as info:
        integer(value)
    assert info.value.reason == reason


def test_text_reads_bytes_as_utf8_and_bounds_length() -> None:
    assert text(b"caf\xc3\xa9") == "café"
    assert text(12) == "12" and text(Decimal("1.50")) == "1.5"
    for bad in (b"\xc3(\xa0", True, {"a": 1}, [1], float("nan")):
        with pytest.raises(OutOfBounds):
            text(bad)
    with pytest.raises(OutOfBounds) as info:
        text("x" * 17_000)
    assert info.value.reason == "too_long"
    assert items("a") == ["a"]
    with pytest.raises(OutOfBounds):
        items(list(range(1001)))


@given(st.one_of(st.integers(), st.floats(), st.decimals(), st.text(max_size=40), st.binary()))
def test_bounds_answer_or_refuse_never_anything_else(value: object) -> None:
    """Any value: a bounded answer or `OutOfBounds`, never another exception or a huge string."""
    for convert in (text, integer, decimal_text):
        try:
            out = convert(value)
        except OutOfBounds:
            continue
        if isinstance(out, int):
            assert -(2**63) <= out <= MAX_INT64
        else:
            assert len(out) <= 16_384


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.decimals(allow_nan=False, allow_infinity=False),
        *(st.decimals(allow_nan=False, allow_infinity=False, places=p) for p in (0, 2, 19, 24)),
    )
)
def test_equal_decimals_written_differently_have_one_text(value: Decimal) -> None:
    """ "49.90", "49.9" and "4.99E+1" are one value, with one text, whichever path formats it."""

    def text_of(number: Decimal | str) -> str:
        try:
            return decimal_text(number)
        except OutOfBounds as exc:
            return exc.reason

    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    padded = Decimal((sign, (*digits, 0, 0, 0), exponent - 3))  # equal, written longer
    assert text_of(padded) == text_of(value)
    # The Decimal fast path and the general one (text goes through the general one) agree.
    assert text_of(value) == text_of(str(value)) == text_of(str(padded))
