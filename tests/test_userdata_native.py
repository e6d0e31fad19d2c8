"""The compiled user_data rules (capi_native, native/userdata) give the Python rules' answers.

Every answer of `UserDataHasher.hash_user_data` with the compiled path on is compared with
`hash_in_python` on the same input: single characters of every settled block, generated text,
phone numbers of every region and form, every country and state name, dates of every century.
The compiled path may hand a value back to Python; it may never answer differently.
"""

from __future__ import annotations

import datetime as dt
import random
import string
from typing import Any

import phonenumbers
import pycountry
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("capi_native")

from consumer.conversion import hashing, userdata
from consumer.conversion.hashing import UserDataHasher, hasher_in_use, native_kernel
from consumer.conversion.userdata import (
    HASHED_USER_FIELDS,
    RAW_USER_FIELDS,
    USER_DATA_FIELDS,
    NormalizeOptions,
)

REGIONS = ("US", "GB", "DE", "IT", "CA")
HASHERS = {region: UserDataHasher(NormalizeOptions(region), mode="native") for region in REGIONS}
# Python's answers, uncached so that each is computed afresh.
REFERENCE = {
    region: UserDataHasher(NormalizeOptions(region), cache_size=0, mode="python")
    for region in REGIONS
}
SETTLED = [
    chr(c) for c in (*range(0x250), *range(0x300, 0x370), *range(0x1E00, 0x1F00))
]  # fmt: skip
SPACES = [chr(c) for c in range(0x110000) if chr(c).isspace()]


def answer(hash_user_data: Any, raw: dict[str, Any]) -> Any:
    try:
        return hash_user_data(raw)
    except Exception as exc:  # e.g. a lone surrogate, which has no UTF-8 to hash
        return type(exc)


def same(raw: dict[str, Any], region: str = "US") -> Any:
    native = answer(HASHERS[region].hash_user_data, raw)
    python = answer(REFERENCE[region].hash_in_python, raw)
    assert native == python, raw
    if isinstance(native, tuple):  # the same order too: the request body is built in it
        assert list(native[0]) == list(python[0]), raw
    return native


def test_the_compiled_path_is_in_use_where_installed() -> None:
    assert hasher_in_use("auto") == "native"
    assert hasher_in_use("python") == "python"
    assert HASHERS["US"].implementation == "native"
    assert REFERENCE["US"].implementation == "python"


def test_every_hashed_field_but_text_dates_has_a_compiled_rule() -> None:
    """A field whose normalizer is replaced loses its compiled rule (it is keyed by the
    function): this says which fields the compiled path covers today."""
    compiled = {f.name for f in USER_DATA_FIELDS if f.normalize in hashing.NATIVE_RULES}
    assert compiled == set(HASHED_USER_FIELDS) - {"db"}


@pytest.mark.parametrize("field", HASHED_USER_FIELDS)
def test_every_settled_character_alone_and_in_a_word(field: str) -> None:
    for char in SETTLED:
        same({field: char})
        same({field: f"Ab{char}1 {char.upper()}z"})


@pytest.mark.parametrize("field", HASHED_USER_FIELDS + RAW_USER_FIELDS)
def test_every_python_whitespace_is_stripped_alike(field: str) -> None:
    for space in SPACES:
        same({field: f"{space}Ann@Example.com{space}"})
        same({field: f"{space}94105{space}"})


text_alphabet = st.one_of(
    st.sampled_from(SETTLED),
    st.sampled_from(SPACES),
    st.sampled_from(string.printable),
    st.characters(),  # anything, surrogates and unassigned code points included
)
raw_text = st.text(text_alphabet, max_size=24)


@settings(max_examples=400, deadline=None)
@given(field=st.sampled_from(HASHED_USER_FIELDS + RAW_USER_FIELDS), text=raw_text)
def test_generated_text_gets_the_python_answer(field: str, text: str) -> None:
    same({field: text})


@settings(max_examples=200, deadline=None)
@given(
    raw=st.dictionaries(
        st.sampled_from(HASHED_USER_FIELDS + RAW_USER_FIELDS),
        st.one_of(
            st.none(),
            raw_text,
            st.integers(),
            st.floats(),
            st.booleans(),
            st.dates(),
            st.lists(st.one_of(st.none(), raw_text, st.integers(), st.dates()), max_size=4),
        ),
    )
)
def test_generated_user_data_gets_the_python_answer(raw: dict[str, Any]) -> None:
    same(raw)


def _phone_forms() -> list[str]:
    """Every region's example numbers of every type as people type them, and changed a digit."""
    rng = random.Random(28)
    formats = (
        phonenumbers.PhoneNumberFormat.E164,
        phonenumbers.PhoneNumberFormat.INTERNATIONAL,
        phonenumbers.PhoneNumberFormat.NATIONAL,
    )
    forms = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in phonenumbers.PhoneNumberType.values():
            example = phonenumbers.example_number_for_type(region, kind)
            if example is None:
                continue
            for form in formats:
                typed = phonenumbers.format_number(example, form)
                forms.append(typed)
                cut = rng.randrange(1, len(typed))
                forms.append(typed[:cut] + str(rng.randrange(10)) + typed[cut:])
                forms.append(typed[:cut] + typed[cut + 1 :])
            international = phonenumbers.format_number(example, formats[1])
            forms.append("00" + international[1:])
            forms.append(international.replace(" ", " (0)", 1))
    for code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
        for length in range(1, 18):
            forms.append(f"+{code}" + "".join(str(rng.randrange(10)) for _ in range(length)))
    return forms


@pytest.mark.parametrize("region", REGIONS)
def test_phone_numbers_of_every_region_get_the_parsers_digits(region: str) -> None:
    forms = _phone_forms()
    assert len(forms) > 10_000
    for typed in forms:
        same({"ph": typed}, region)


def test_the_compiled_phone_path_answers_the_common_forms_itself() -> None:
    """Not a correctness check: the compiled path must take the common case, not defer all."""
    asked: list[object] = []
    hasher = UserDataHasher(NormalizeOptions("US"), cache_size=0, mode="python")

    def python_digest(field: str, value: object) -> str:
        asked.append(value)
        return hasher.digest(field, value)

    kernel = native_kernel(hasher.options, python_digest, 0)
    typed = ["+1 (415) 555-0100", "(212) 555-0100", "+44 20 7946 0123", "0049 89 1234567",
             "+33 4 77 12 34 56", "+61 2 9374 4000"]  # fmt: skip
    for number in typed:
        kernel.hash_user_data({"ph": number})
    assert asked == []


def test_every_country_name_and_code_in_any_case() -> None:
    names = [alias for alias in userdata._COUNTRY_ALIASES]
    for country in pycountry.countries:
        for attribute in ("alpha_2", "alpha_3", "numeric", "name", "official_name", "common_name"):
            if value := getattr(country, attribute, None):
                names.append(value)
    for name in names:
        for typed in (name, name.upper(), name.lower(), f"  {name.title()} ", name + "x"):
            same({"country": typed})


def test_every_state_name_and_code_typed_several_ways() -> None:
    subdivisions: Any = pycountry.subdivisions
    for code in ("AU", "CA", "US", "DE", "FR"):
        for sub in subdivisions.get(country_code=code) or ():
            short = sub.code.split("-", 1)[1]
            for typed in (sub.name, sub.name.upper(), short, ".".join(short) + ".", f" {short} "):
                same({"st": typed})


def test_dates_of_birth_of_every_century_and_as_text() -> None:
    rng = random.Random(7)
    for year in (1, 9, 99, 999, 1000, 1899, 1900, 1987, 2024, 9999):
        day = dt.date(year, rng.randint(1, 12), rng.randint(1, 28))
        same({"db": day})
        same({"db": dt.datetime(year, day.month, day.day, 13, 5)})
        same({"db": [day, day.isoformat(), str(day.year)]})
    for text in ("1987-03-05", "03/05/1987", "5 March 1987", "19870305", "1987-02-30"):
        same({"db": text})


def test_values_that_are_not_text_lists_and_limits() -> None:
    class Text(str):
        pass

    same({"em": Text("a@b.co"), "fn": Text(" Ann "), "client_ip_address": Text(" 1.2.3.4 ")})
    same({"ph": 16505551234, "zp": 94105.0, "external_id": 12, "fn": 3, "em": True})
    same({"em": ["a@b.co", "A@B.CO", None, 3, "x" * 20_000]})
    same({"em": ["a@b.co"] * 1001, "client_user_agent": "x" * 20_000})
    same({"fn": None, "client_ip_address": None, "click_id": 5, "partner_id": "  "})
    same({"em": "A" * 64, "ph": " " + "ab" * 32 + " ", "fn": "\ud800", "ln": " x\ud800 "})


def test_an_unknown_field_fails_as_it_does_in_python() -> None:
    for raw in ({"nickname": "x"}, {"nickname": ["x"]}, {"nickname": 3}):
        with pytest.raises(KeyError):
            HASHERS["US"].hash_user_data(raw)
        with pytest.raises(KeyError):
            REFERENCE["US"].hash_in_python(raw)
    assert same({"nickname": None}) == ({}, ())


def test_answers_survive_the_cache_when_every_value_shares_one_slot() -> None:
    hasher = UserDataHasher(NormalizeOptions("US"), mode="python")
    kernel = native_kernel(hasher.options, hasher.digest, 1)  # one slot: each value evicts the last
    values = ["Ann", "Bo", "Ann", "  ann ", "N/A", "Bo", "00000", "Ann"]
    for _ in range(2):
        for value in values:
            for field in ("fn", "zp", "ge", "em"):
                assert kernel.hash_user_data({field: value}) == hasher.hash_in_python(
                    {field: value}
                )
    dates = [dt.date(1990, 3, 7), dt.date(1984, 12, 21), dt.date(1990, 3, 7)]
    for date in [*dates, dt.datetime(1984, 12, 21, 23, 59), *dates]:  # dates by YYYYMMDD
        assert kernel.hash_user_data({"db": date}) == hasher.hash_in_python({"db": date})
