from __future__ import annotations

import datetime as dt
import hashlib
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.capi import HASHED_USER_FIELDS, is_hex_digest
from consumer.errors import PermanentError
from consumer.normalize import (
    NormalizeOptions,
    UserDataHasher,
    format_decimal,
    format_int,
    normalize_city,
    normalize_conversion,
    normalize_country,
    normalize_currency,
    normalize_custom_data,
    normalize_dob,
    normalize_email,
    normalize_gender,
    normalize_name,
    normalize_phone,
    normalize_state,
    normalize_zip,
)
from tests.conftest import ConversionFactory


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_hash_email_reference_digest_from_fact_sheet() -> None:
    hasher = UserDataHasher(NormalizeOptions())
    assert hasher.digest("em", "  Test@Example.COM ") == (
        "973dfe463ec85785f5f95af5ba3906eedb2d931c24e69824a89ea65dba4e813b"
    )


@pytest.mark.parametrize(("raw", "country", "expected"), [
    ("+1 (650) 555-1234", "US", "16505551234"),
    ("(650) 555-1234", "US", "16505551234"),
    ("650.555.1234", "US", "16505551234"),
    ("1-650-555-1234", "US", "16505551234"),
    ("0044 20 7946 0958", "US", "442079460958"),
    ("+44 (0)20 7946 0958", "US", "442079460958"),
    ("020 7946 0958", "GB", "442079460958"),
    ("+49 89 12345678", "US", "498912345678"),
    ("089 12345678", "DE", "498912345678"),
    ("+33 4 77 12 34 56", "US", "33477123456"),
    ("06 12 34 56 78", "FR", "33612345678"),
    ("+81 3-1234-5678", "US", "81312345678"),
    ("  ", "US", ""),
])  # fmt: skip
def test_normalize_phone_vectors(raw: str, country: str, expected: str) -> None:
    assert normalize_phone(raw, country) == expected


@pytest.mark.parametrize(("raw", "expected"), [
    ("1990-03-07", "19900307"),
    ("1990/3/7", "19900307"),
    ("19900307", "19900307"),
    ("03/07/1990", "19900307"),
    ("3-7-1990", "19900307"),
    ("25/12/1990", "19901225"),  # day > 12: unambiguous whatever the order
    ("1990-03-07T00:00:00Z", "19900307"),
    ("1990-02-30", ""),
    ("yesterday", ""),
])  # fmt: skip
def test_normalize_dob_vectors(raw: str, expected: str) -> None:
    assert normalize_dob(raw) == expected


def test_normalize_dob_day_first_order_and_date_objects() -> None:
    assert normalize_dob("07/03/1990", "dmy") == "19900307"
    assert normalize_dob(dt.date(1990, 3, 7)) == "19900307"


@pytest.mark.parametrize(("raw", "expected"), [
    ("Female", "f"), ("F", "f"), ("woman", "f"), ("MALE", "m"), ("m", "m"),
    ("non-binary", "n"), ("Other", "n"), ("x", "n"), ("banana", ""),
])  # fmt: skip
def test_normalize_gender_vectors(raw: str, expected: str) -> None:
    assert normalize_gender(raw) == expected


@pytest.mark.parametrize(("raw", "expected"), [
    ("US", "us"), ("usa", "us"), ("United States", "us"), ("United States of America", "us"),
    ("DEU", "de"), ("Germany", "de"), ("United Kingdom", "gb"), ("England", "gb"),
    ("France", "fr"), ("  jp ", "jp"), ("Atlantis", ""),
])  # fmt: skip
def test_normalize_country_vectors(raw: str, expected: str) -> None:
    assert normalize_country(raw) == expected


@pytest.mark.parametrize(("raw", "expected"), [
    ("San Francisco", "sanfrancisco"), ("Saint-Étienne", "saintétienne"),
    ("München", "münchen"), ("St. Louis", "stlouis"), ("  New  York ", "newyork"),
])  # fmt: skip
def test_normalize_city_keeps_unicode_letters_drops_spaces_punctuation(
    raw: str, expected: str
) -> None:
    assert normalize_city(raw) == expected


@pytest.mark.parametrize(("raw", "expected"), [
    ("94107", "94107"), ("94107-1234", "94107"), ("10001 2345", "10001"),
    ("SW1A 1AA", "sw1a1aa"), ("80331", "80331"),
])  # fmt: skip
def test_normalize_zip_vectors(raw: str, expected: str) -> None:
    assert normalize_zip(raw) == expected


def test_normalize_state_codes_and_us_names() -> None:
    assert normalize_state("CA") == "ca"
    assert normalize_state("California") == "ca"
    assert normalize_state("new york") == "ny"
    assert normalize_state("Narnia") == ""


def test_normalize_names_and_email_trim_lowercase_nfc() -> None:
    decomposed = "Zoe\u0308"  # e + combining diaeresis
    assert normalize_name(f"  {decomposed} ") == "zoë"
    assert normalize_name("José") == "josé"
    assert normalize_email(" A.B@Example.Org\t") == "a.b@example.org"


def test_hash_user_data_each_field_against_own_vectors() -> None:
    hasher = UserDataHasher(NormalizeOptions(default_phone_country="US"))
    raw = {
        "em": "Test@Example.com",
        "ph": "(650) 555-1234",
        "fn": "José",
        "ln": "O'Brien",
        "ge": "female",
        "db": "03/07/1990",
        "ct": "San Francisco",
        "st": "California",
        "zp": "94107-1234",
        "country": "United States",
        "external_id": " cust-42 ",
        "hashed_maids": "AEBE52E7-03EE-455A-B3C4-E57283966239",
        "client_ip_address": "203.0.113.9",
        "client_user_agent": "UA",
        "click_id": "epik-1",
    }
    expected = {
        "em": sha("test@example.com"),
        "ph": sha("16505551234"),
        "fn": sha("josé"),
        "ln": sha("o'brien"),
        "ge": sha("f"),
        "db": sha("19900307"),
        "ct": sha("sanfrancisco"),
        "st": sha("ca"),
        "zp": sha("94107"),
        "country": sha("us"),
        "external_id": sha("cust-42"),
        "hashed_maids": sha("aebe52e7-03ee-455a-b3c4-e57283966239"),
    }
    user_data = hasher.hash_user_data(raw)
    for field, digest in expected.items():
        assert user_data[field] == [digest], field
    assert user_data["client_ip_address"] == "203.0.113.9"
    assert user_data["click_id"] == "epik-1"


def test_hash_user_data_already_hashed_passes_through_lowercased() -> None:
    digest = sha("test@example.com")
    user_data = UserDataHasher(NormalizeOptions()).hash_user_data({"em": [digest.upper(), digest]})
    assert user_data["em"] == [digest]


def test_hash_user_data_empty_values_are_omitted_not_hashed() -> None:
    user_data = UserDataHasher(NormalizeOptions()).hash_user_data(
        {"em": "   ", "ph": "", "fn": None, "ge": "banana", "client_ip_address": " "}
    )
    assert user_data == {}


def test_hash_user_data_cache_off_gives_same_digests() -> None:
    cached, uncached = UserDataHasher(NormalizeOptions()), UserDataHasher(NormalizeOptions(), 0)
    raw = {"em": "a@b.c", "ph": "+1 650 555 1234", "ct": "Paris"}
    assert cached.hash_user_data(raw) == uncached.hash_user_data(raw)


@given(st.sampled_from(HASHED_USER_FIELDS), st.text())
def test_digest_any_string_is_64_hex_or_omitted_and_never_raises(field: str, raw: str) -> None:
    digest = UserDataHasher(NormalizeOptions()).digest(field, raw)
    assert digest is None or is_hex_digest(digest)


@given(st.sampled_from(HASHED_USER_FIELDS), st.text(min_size=1))
def test_digest_is_idempotent_hashing_a_digest_returns_it(field: str, raw: str) -> None:
    hasher = UserDataHasher(NormalizeOptions())
    digest = hasher.digest(field, raw)
    if digest is not None:
        assert hasher.digest(field, digest) == digest


@given(st.text())
def test_normalizers_are_idempotent(raw: str) -> None:
    for normalize in (normalize_email, normalize_name, normalize_city, normalize_zip):
        once = normalize(raw)
        assert normalize(once) == once


@pytest.mark.parametrize(("value", "expected"), [
    (72.39, "72.39"), (Decimal("72.390"), "72.39"), ("72.39", "72.39"), (100, "100"),
    (0.1 + 0.2, "0.30000000000000004"), (1e-7, "0.0000001"), (Decimal("1E+3"), "1000"),
    ("-0.00", "0"),
])  # fmt: skip
def test_format_decimal_plain_strings_without_float_artefacts(value: object, expected: str) -> None:
    assert format_decimal(value, "value") == expected


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "abc", True, None, "NaN"])
def test_format_decimal_rejects_non_numbers_naming_field(value: object) -> None:
    with pytest.raises(PermanentError) as info:
        format_decimal(value, "custom_data.value")
    assert "custom_data.value" in info.value.detail


def test_format_int_and_currency() -> None:
    assert format_int(3.0, "q") == 3
    assert format_int("4", "q") == 4
    with pytest.raises(PermanentError):
        format_int(2.5, "q")
    assert normalize_currency(" usd ") == "USD"
    with pytest.raises(PermanentError):
        normalize_currency("XYZ")


def test_normalize_custom_data_types() -> None:
    custom = normalize_custom_data(
        {
            "value": Decimal("10.50"),
            "currency": "eur",
            "num_items": 2,
            "content_ids": ["a", 1],
            "contents": [{"id": "a", "item_price": 5.25, "quantity": "2", "item_name": None}],
            "order_id": 123,
            "search_string": None,
        }
    )
    assert custom == {
        "value": "10.5",
        "currency": "EUR",
        "num_items": 2,
        "content_ids": ["a", "1"],
        "contents": [{"id": "a", "item_price": "5.25", "quantity": 2}],
        "order_id": "123",
    }


def test_normalize_conversion_returns_new_record_keeping_coordinates(
    conversion_factory: ConversionFactory,
) -> None:
    conversion = conversion_factory(offset=7, user_data={"em": "X@Y.z"})
    normalized = normalize_conversion(conversion, UserDataHasher(NormalizeOptions()))
    assert normalized.coords == conversion.coords
    assert normalized.event["user_data"] == {"em": [sha("x@y.z")]}
    assert conversion.event["user_data"] == {"em": "X@Y.z"}


def test_hash_user_data_wrong_types_are_permanent_errors_naming_field() -> None:
    hasher = UserDataHasher(NormalizeOptions())
    for bad in ({"em": {"nested": "x"}}, {"ph": 6505551234}, {"fn": ["ok", 3]}):
        with pytest.raises(PermanentError) as info:
            hasher.hash_user_data(bad)
        assert "user_data." in info.value.detail
    assert hasher.hash_user_data({"db": dt.date(1990, 3, 7)}) == {"db": [sha("19900307")]}
