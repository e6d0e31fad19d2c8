"""Every user_data rule, both directions: what must normalize, and what must be left out (why)."""

from __future__ import annotations

import ast
import datetime as dt
import hashlib
import random
from decimal import Decimal
from pathlib import Path

import phonenumbers
import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.conversion import capi, quality, userdata
from consumer.conversion.hashing import UserDataHasher
from consumer.conversion.userdata import (
    FIELDS_BY_NAME,
    HASHED_USER_FIELDS,
    MATCH_IDENTIFIERS,
    USER_DATA_FIELDS,
    NormalizeOptions,
    Omitted,
    is_hex_digest,
    normalize_city,
    normalize_email,
    normalize_name,
    normalize_zip,
)

US = NormalizeOptions()


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def normalized(field: str, raw: str, options: NormalizeOptions = US) -> str:
    """The normalized text of one value, or the reason it is left out."""
    normalize = FIELDS_BY_NAME[field].normalize
    assert normalize is not None
    try:
        return normalize(raw, options) or "invalid"
    except Omitted as omitted:
        return omitted.reason


def test_hash_email_reference_digest_from_fact_sheet() -> None:
    hasher = UserDataHasher(US)
    assert hasher.digest("em", "  Test@Example.COM ") == (
        "973dfe463ec85785f5f95af5ba3906eedb2d931c24e69824a89ea65dba4e813b"
    )


@pytest.mark.parametrize(("raw", "expected"), [
    (" A.B@Example.Org\t", "a.b@example.org"),
    ("Test@Example.COM", "test@example.com"),
    ("first.last+tag@sub.example.co.uk", "first.last+tag@sub.example.co.uk"),
    ("ÉLODIE@exemple.fr", "élodie@exemple.fr"),
    ("not-an-email", "invalid"),
    ("@example.com", "invalid"),
    ("user@", "invalid"),
    ("a@b@c", "invalid"),
])  # fmt: skip
def test_email_vectors(raw: str, expected: str) -> None:
    assert normalized("em", raw) == expected


PHONES = [
    ("+1 (650) 555-1234", "US", "16505551234"),
    ("(650) 555-1234", "US", "16505551234"),
    ("650.555.1234", "US", "16505551234"),
    ("650-555-1234", "US", "16505551234"),
    ("1-650-555-1234", "US", "16505551234"),
    ("+1 650 555 1234 ext. 12", "US", "16505551234"),
    ("+1 650-555-1234 x12", "US", "16505551234"),
    ("(650) 555-1234 #12", "US", "16505551234"),
    ("011 44 20 7946 0958", "US", "442079460958"),
    ("0044 20 7946 0958", "US", "442079460958"),
    ("+44 (0)20 7946 0958", "US", "442079460958"),
    ("+44 (0) 20 7946 0958", "GB", "442079460958"),
    ("020 7946 0958", "GB", "442079460958"),
    ("07700 900123", "GB", "447700900123"),
    ("+49 89 12345678", "US", "498912345678"),
    ("089 12345678", "DE", "498912345678"),
    ("+49 (0)30 123456", "US", "4930123456"),
    ("+33 4 77 12 34 56", "US", "33477123456"),
    ("06 12 34 56 78", "FR", "33612345678"),
    ("+81 3-1234-5678", "US", "81312345678"),
    ("03-1234-5678", "JP", "81312345678"),
    ("06 6982 1234", "IT", "390669821234"),
    ("+39 06 6982 1234", "US", "390669821234"),
    ("8 (495) 123-45-67", "RU", "74951234567"),
    ("+7 495 123-45-67", "US", "74951234567"),
    ("(11) 91234-5678", "BR", "5511912345678"),
    ("98765 43210", "IN", "919876543210"),
    ("0412 345 678", "AU", "61412345678"),
    ("+1 (416) 555-0123", "CA", "14165550123"),
    ("416-555-0123", "CA", "14165550123"),
]


@pytest.mark.parametrize(("raw", "region", "expected"), PHONES)
def test_phone_vectors_e164_digits(raw: str, region: str, expected: str) -> None:
    assert normalized("ph", raw, NormalizeOptions(default_phone_country=region)) == expected


@pytest.mark.parametrize(("raw", "region"), [
    ("12345", "US"),
    ("555-1234", "US"),  # local only: no area code, matches nobody
    ("+1 650", "US"),
    ("call me", "US"),
    ("+", "US"),
    ("0", "GB"),
    ("8 (495) 123-45-67", "US"),  # a Russian number read as American: impossible
    ("+999 1234 5678", "US"),  # no such country code
])  # fmt: skip
def test_phone_impossible_numbers_are_left_out(raw: str, region: str) -> None:
    assert normalized("ph", raw, NormalizeOptions(default_phone_country=region)) == "invalid"


@pytest.mark.parametrize(("raw", "region", "expected"), [p for p in PHONES if p[1] in ("US", "CA")])
def test_phone_fast_path_agrees_with_the_parser(raw: str, region: str, expected: str) -> None:
    from consumer.conversion.userdata import _nanp_digits

    assert _nanp_digits(raw) in ("", expected)


@pytest.mark.parametrize(("raw", "expected"), [
    ("1990-03-07", "19900307"),
    ("1990/3/7", "19900307"),
    ("19900307", "19900307"),
    ("03/07/1990", "19900307"),
    ("3-7-1990", "19900307"),
    ("3.7.1990", "19900307"),
    ("25/12/1990", "19901225"),  # day > 12: unambiguous whatever the order
    ("1990-03-07T00:00:00Z", "19900307"),
    ("1990-03-07 10:00", "19900307"),
    ("Mar 5, 1987", "19870305"),
    ("Mar. 5, 1987", "19870305"),
    ("March 5, 1987", "19870305"),
    ("march 5 1987", "19870305"),
    ("March 5th, 1987", "19870305"),
    ("5 March 1987", "19870305"),
    ("5th of March 1987", "19870305"),
    ("05-Mar-1987", "19870305"),
    ("5-mar-1987", "19870305"),
    ("1st Sept 2001", "20010901"),
    ("SEPTEMBER 22ND, 2001", "20010922"),
    ("1987-Mar-05", "19870305"),
    ("Feb 29, 2000", "20000229"),
])  # fmt: skip
def test_dob_vectors(raw: str, expected: str) -> None:
    assert normalized("db", raw) == expected


@pytest.mark.parametrize("raw", [
    "1990-02-30", "Feb 29, 2001", "31 April 1990", "13/13/1990", "yesterday", "Smarch 5, 1987",
    "1990-13-01", "00/00/0000", "1850-01-01", "March 1987", "5 March",
])  # fmt: skip
def test_dob_impossible_or_unreadable_dates_are_left_out(raw: str) -> None:
    assert normalized("db", raw) == "invalid"


def test_dob_day_first_order_dates_and_integers() -> None:
    assert normalized("db", "07/03/1990", NormalizeOptions(dob_order="dmy")) == "19900307"
    hasher = UserDataHasher(US)
    assert hasher.digest("db", dt.date(1990, 3, 7)) == sha("19900307")
    assert hasher.digest("db", dt.datetime(1990, 3, 7, 12, 0)) == sha("19900307")
    assert hasher.digest("db", 19900307) == sha("19900307")
    assert hasher.digest("db", 19900230) == "invalid"


@pytest.mark.parametrize(("raw", "expected"), [
    ("Female", "f"), ("F", "f"), ("f.", "f"), ("woman", "f"), ("WOMAN", "f"), ("girl", "f"),
    ("feminine", "f"), ("w", "f"),
    ("MALE", "m"), ("m", "m"), ("Man", "m"), ("boy", "m"), ("masculine", "m"), (" M ", "m"),
    ("non-binary", "n"), ("Non Binary", "n"), ("nonbinary", "n"), ("non_binary", "n"),
    ("NON-BINARY", "n"), ("nb", "n"), ("N", "n"), ("enby", "n"), ("genderqueer", "n"),
])  # fmt: skip
def test_gender_words_map_to_one_letter(raw: str, expected: str) -> None:
    assert normalized("ge", raw) == expected


@pytest.mark.parametrize(("raw", "expected"), [
    ("unknown", "no_value"), ("Unknown", "no_value"), ("other", "no_value"),
    ("unspecified", "no_value"), ("u", "no_value"), ("x", "no_value"), ("X", "no_value"),
    ("prefer not to say", "no_value"), ("Prefer-not-to-say", "no_value"),
    ("prefer_not_to_answer", "no_value"), ("n/a", "no_value"), ("-", "no_value"),
    ("banana", "invalid"), ("fm", "invalid"),
])  # fmt: skip
def test_gender_values_that_state_no_gender_are_never_sent_as_n(raw: str, expected: str) -> None:
    assert normalized("ge", raw) == expected


@pytest.mark.parametrize(("raw", "expected"), [
    ("CA", "ca"), ("California", "ca"), ("new york", "ny"), ("N.J.", "nj"), ("New-Jersey", "nj"),
    (" Texas. ", "tx"), ("N. Y.", "ny"), ("district of columbia", "dc"), ("puerto rico", "pr"),
    ("Ontario", "on"), ("ON", "on"), ("Québec", "qc"), ("Quebec", "qc"), ("B.C.", "bc"),
    ("British Columbia", "bc"), ("Newfoundland and Labrador", "nl"), ("Nova-Scotia", "ns"),
    ("New South Wales", "nsw"), ("NSW", "nsw"), ("Victoria", "vic"), ("Queensland", "qld"),
    ("Western Australia", "wa"), ("Australian Capital Territory", "act"), ("by", "by"),
])  # fmt: skip
def test_state_vectors(raw: str, expected: str) -> None:
    assert normalized("st", raw) == expected


@pytest.mark.parametrize("raw", ["Narnia", "X", "...", "12", "Bavaria"])
def test_state_unknown_names_are_left_out(raw: str) -> None:
    assert normalized("st", raw) == "invalid"


@pytest.mark.parametrize(("raw", "expected"), [
    ("94107", "94107"), ("94107-1234", "94107"), ("10001 2345", "10001"), ("941071234", "94107"),
    ("02139", "02139"), ("SW1A 1AA", "sw1a1aa"), ("80331", "80331"), ("K1A 0B1", "k1a0b1"),
    ("2000", "2000"), ("75008", "75008"),
])  # fmt: skip
def test_postcode_vectors(raw: str, expected: str) -> None:
    assert normalized("zp", raw) == expected


@pytest.mark.parametrize("raw", [
    "N/A", "n/a", "NA", "none", "None", "null", "-", "---", "00000", "0", "00000-0000",
    "not applicable", "unknown",
])  # fmt: skip
def test_postcode_placeholders_are_left_out(raw: str) -> None:
    assert normalized("zp", raw) == "no_value"


@pytest.mark.parametrize(("raw", "expected"), [
    ("US", "us"), ("usa", "us"), ("U.S.A.", "us"), ("United States", "us"),
    ("United States of America", "us"), ("DEU", "de"), ("Germany", "de"),
    ("United Kingdom", "gb"), ("England", "gb"), ("France", "fr"), ("  jp ", "jp"),
    ("Atlantis", "invalid"),
])  # fmt: skip
def test_country_vectors(raw: str, expected: str) -> None:
    assert normalized("country", raw) == expected


@pytest.mark.parametrize(("raw", "expected"), [
    ("San Francisco", "sanfrancisco"), ("Saint-Étienne", "saintétienne"),
    ("München", "münchen"), ("St. Louis", "stlouis"), ("  New  York ", "newyork"),
])  # fmt: skip
def test_city_keeps_unicode_letters_drops_spaces_punctuation(raw: str, expected: str) -> None:
    assert normalized("ct", raw) == expected


@pytest.mark.parametrize(("raw", "expected"), [
    ("AEBE52E7-03EE-455A-B3C4-E57283966239", "aebe52e7-03ee-455a-b3c4-e57283966239"),
    (" 38400000-8cf0-11bd-b23e-10b96e40000d ", "38400000-8cf0-11bd-b23e-10b96e40000d"),
    ("00000000-0000-0000-0000-000000000000", "no_value"),
    ("00000000000000000000000000000000", "no_value"),
])  # fmt: skip
def test_mobile_ad_id_vectors(raw: str, expected: str) -> None:
    assert normalized("hashed_maids", raw) == expected


def test_names_and_external_id_trim_and_nfc() -> None:
    decomposed = "Zoe\u0308"  # e + combining diaeresis
    assert normalized("fn", f"  {decomposed} ") == "zoë"
    assert normalized("ln", "O'Brien") == "o'brien"
    assert normalized("external_id", " Cust-42 ") == "Cust-42"


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("ph", 16505551234, "16505551234"),
    ("ph", 6505551234.0, "16505551234"),
    ("ph", Decimal("6505551234"), "16505551234"),
    ("zp", 94107, "94107"),
    ("zp", 94107.0, "94107"),
    ("external_id", 1234567890123, "1234567890123"),
    ("external_id", Decimal("42"), "42"),
    ("external_id", 1e20, "100000000000000000000"),
    ("db", 19900307, "19900307"),
])  # fmt: skip
def test_numbers_are_natural_carriers_for_some_fields(
    field: str, value: object, expected: str
) -> None:
    assert UserDataHasher(US).digest(field, value) == sha(expected)


@pytest.mark.parametrize(("field", "value"), [
    ("external_id", 12.5), ("zp", float("nan")), ("ph", True), ("em", 42), ("fn", 3),
    ("external_id", {"id": 1}), ("zp", Decimal("9.5")), ("db", float("inf")),
])  # fmt: skip
def test_values_of_the_wrong_type_are_left_out(field: str, value: object) -> None:
    assert UserDataHasher(US).digest(field, value) == "wrong_type"


def test_hash_user_data_each_field_against_own_vectors() -> None:
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
    user_data, dropped = UserDataHasher(US).hash_user_data(raw)
    for field, digest in expected.items():
        assert user_data[field] == [digest], field
    assert user_data["client_ip_address"] == "203.0.113.9"
    assert user_data["click_id"] == "epik-1"
    assert dropped == ()


def test_hash_user_data_one_bad_field_is_dropped_with_reason_the_rest_kept() -> None:
    user_data, dropped = UserDataHasher(US).hash_user_data(
        {"em": "a@b.co", "ph": "12", "ge": "unknown", "zp": 94107, "fn": 7, "click_id": 5}
    )
    assert set(user_data) == {"em", "zp"}
    assert dropped == (
        ("ph", "invalid"),
        ("ge", "no_value"),
        ("fn", "wrong_type"),
        ("click_id", "wrong_type"),
    )


def test_hash_user_data_lists_keep_good_items_and_report_bad_ones() -> None:
    user_data, dropped = UserDataHasher(US).hash_user_data({"em": ["a@b.co", 3, "A@B.CO", None]})
    assert user_data == {"em": [sha("a@b.co")]}
    assert dropped == (("em", "wrong_type"),)


def test_hash_user_data_already_hashed_passes_through_lowercased() -> None:
    digest = sha("test@example.com")
    user_data, _ = UserDataHasher(US).hash_user_data({"em": [digest.upper(), digest]})
    assert user_data["em"] == [digest]


def test_hash_user_data_empty_values_are_absent_not_dropped() -> None:
    user_data, dropped = UserDataHasher(US).hash_user_data(
        {"em": "   ", "ph": "", "fn": None, "client_ip_address": " "}
    )
    assert user_data == {} and dropped == ()


def test_hash_user_data_cache_off_gives_same_result() -> None:
    cached, uncached = UserDataHasher(US), UserDataHasher(US, 0)
    raw = {"em": "a@b.c", "ph": "+1 650 555 1234", "ct": "Paris", "ge": "x"}
    assert cached.hash_user_data(raw) == uncached.hash_user_data(raw)
    assert cached.hash_user_data(raw) == uncached.hash_user_data(raw)  # now from the cache


@given(st.sampled_from(HASHED_USER_FIELDS), st.text())
def test_digest_any_string_is_64_hex_or_a_reason_and_never_raises(field: str, raw: str) -> None:
    digest = UserDataHasher(US).digest(field, raw)
    assert is_hex_digest(digest) or digest in ("", "invalid", "no_value")


@given(st.sampled_from(HASHED_USER_FIELDS), st.text(min_size=1))
def test_digest_is_idempotent_hashing_a_digest_returns_it(field: str, raw: str) -> None:
    hasher = UserDataHasher(US)
    digest = hasher.digest(field, raw)
    if is_hex_digest(digest):
        assert hasher.digest(field, digest) == digest


@given(st.sampled_from(HASHED_USER_FIELDS), st.one_of(st.integers(), st.floats(), st.booleans()))
def test_digest_of_any_number_is_64_hex_or_a_reason(field: str, raw: object) -> None:
    digest = UserDataHasher(US).digest(field, raw)
    assert is_hex_digest(digest) or digest in ("invalid", "no_value", "wrong_type")


@given(st.text())
def test_normalizers_are_idempotent(raw: str) -> None:
    for normalize in (normalize_email, normalize_name, normalize_city):
        once = normalize(raw, US)
        assert normalize(once, US) == once
    try:
        once = normalize_zip(raw, US)
    except Omitted:
        return
    assert normalize_zip(once, US) == once


# The table is the one place a field is declared: every consumer must read it, not a copy.
def test_field_table_reaches_validator_quality_and_summary() -> None:
    for field in USER_DATA_FIELDS:  # the validator accepts each field in its own form
        value: object = ["a" * 64] if field.is_hashed else "x"
        capi.validate_event(
            {"event_name": "lead", "action_source": "web", "event_time": 1, "event_id": "e",
             "user_data": {"em": ["b" * 64], field.name: value}},
            now_s=10,
        )  # fmt: skip
    assert set(quality.IDENTIFIERS) == set(MATCH_IDENTIFIERS)
    for field in USER_DATA_FIELDS:
        if field.match_identifier is not None:
            user_data = {field.name: "x", "client_ip_address": "x", "client_user_agent": "x"}
            assert field.match_identifier in quality.identifiers_of(user_data), field.name
        hasher = UserDataHasher(US)
        if field.is_hashed:
            assert field.name in hasher._digesters
        assert field.description


def test_no_module_lists_user_data_field_names_of_its_own() -> None:
    """A tuple of several field names outside userdata.py is a second table that will drift."""
    names = {f.name for f in USER_DATA_FIELDS}
    assert len(names) == len(USER_DATA_FIELDS)
    consumer_dir = Path(__file__).resolve().parent.parent / "consumer"
    for path in consumer_dir.rglob("*.py"):
        if path.name == "userdata.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Tuple | ast.List | ast.Set):
                listed = {
                    e.value for e in node.elts if isinstance(e, ast.Constant) and e.value in names
                }
                assert len(listed) < 4, f"{path.name} lists user_data fields {sorted(listed)}"


def test_user_data_values_over_their_bounds_are_left_out_as_too_long() -> None:
    """Issue 24: a megabyte email or 10,000 phone numbers are not normalized, hashed and
    cached (the digest cache keys on the raw value); a huge Decimal is not turned into an int."""
    from decimal import Decimal

    from consumer.conversion.hashing import UserDataHasher
    from consumer.conversion.userdata import NormalizeOptions

    hasher = UserDataHasher(NormalizeOptions())
    user_data, dropped = hasher.hash_user_data(
        {
            "em": "a" * 20_000 + "@example.com",
            "ph": ["6505551234"] * 1001,
            "client_user_agent": "Mozilla/" + "x" * 20_000,
            "client_ip_address": "10.0.0.1",
            "external_id": Decimal("1e999999999"),
            "fn": "Ann",
        }
    )
    assert set(user_data) == {"client_ip_address", "fn"}
    assert sorted(dropped) == [
        ("client_user_agent", "too_long"),
        ("em", "too_long"),
        ("external_id", "wrong_type"),
        ("ph", "too_long"),
    ]


PHONE_DIGEST_INPUTS = [
    ("+44 20 7946 0958", "US"), ("020 7946 0958", "GB"), ("06 6982 1234", "IT"),
    ("+49 30 901820", "US"), ("030 901820", "DE"), ("+33 1 42 68 53 00", "US"),
    ("+81 3-3224-5000", "US"), ("+61 2 9374 4000", "US"), ("(650) 555-1234", "US"),
    ("+55 11 3003-0000", "US"), ("8 (495) 123-45-67", "RU"), ("+91 22 2778 0000", "US"),
    ("011 52 55 5080 2000", "US"), ("+86 10 6552 9988", "US"),
]  # fmt: skip


def test_phone_digests_are_fixed_for_the_pinned_metadata() -> None:
    """Issue 26: phonenumberslite is pinned because its metadata decides how numbers are
    formatted, so a release can change `ph` digests. These fourteen numbers in eleven countries
    hash to these digests with the pinned version; a bump that changes one is a conscious
    change (check what changed, then update the digest here and say so in the changelog)."""
    from consumer.conversion.hashing import UserDataHasher

    digests = []
    for raw, region in PHONE_DIGEST_INPUTS:
        hasher = UserDataHasher(NormalizeOptions(default_phone_country=region), cache_size=0)
        user_data, dropped = hasher.hash_user_data({"ph": raw})
        assert dropped == (), raw
        digests.append(user_data["ph"][0])
    combined = hashlib.sha256("".join(digests).encode()).hexdigest()
    assert combined == "14d875f23c3fab2c8cf5efe44d815320c25c57b2c907d8caca8f066641e6e8bf"


def _international_samples() -> list[str]:
    """Numbers of every region and type in international form, and variants of them a digit
    longer, shorter or changed (so impossible lengths and other prefixes are met too)."""
    rng = random.Random(26)
    samples = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in phonenumbers.PhoneNumberType.values():
            example = phonenumbers.example_number_for_type(region, kind)
            if example is None:
                continue
            e164 = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)
            samples.append(e164)
            digits = e164[1:]
            for _ in range(3):
                cut = rng.randrange(1, len(digits))
                samples.append("+" + digits[:cut] + str(rng.randrange(10)) + digits[cut:])
                samples.append("+" + digits[:cut] + digits[cut + 1 :])
                samples.append("+" + digits[:cut] + str(rng.randrange(10)) + digits[cut + 1 :])
    for code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
        for length in range(1, 16):
            samples.append(f"+{code}" + "".join(str(rng.randrange(10)) for _ in range(length)))
    return samples


def test_the_international_fast_path_agrees_with_the_parser_wherever_it_answers() -> None:
    """The fast path may decline ('' sends the number to the parser), never differ."""
    samples = _international_samples()
    answered = 0
    for text in samples:
        fast = userdata.international_digits(text)
        if fast:
            answered += 1
            for region in ("US", "DE", "IT"):
                assert fast == userdata.parsed_e164(text, region), (text, region)
    assert len(samples) > 10_000
    assert answered > len(samples) // 3  # it must take the common case, not decline all


@pytest.mark.parametrize(
    ("typed", "digits"),
    [("+44 20 7946 0958", "442079460958"), ("0049 89 1234567", "49891234567"),
     ("+33 4 77 12 34 56", "33477123456"), ("+39 06 6982 1234", "390669821234"),
     ("+44 (0)20 7946 0958", "442079460958"), ("+7 8 495 123 45 67", "74951234567")],
)  # fmt: skip
def test_international_numbers_give_the_parsers_digits(typed: str, digits: str) -> None:
    assert userdata.normalize_phone(typed, userdata.NormalizeOptions("US", "mdy")) == digits
