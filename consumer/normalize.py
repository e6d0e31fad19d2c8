"""Normalize and SHA-256 user data exactly as Pinterest specifies; format money as decimal strings.

Pure functions: `normalize_conversion` takes a mapped `Conversion` with raw values and returns one
ready to send. Already-hashed values (64 hex characters) pass through and are never hashed twice.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import math
import re
import unicodedata
from collections.abc import Callable, Iterable
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any, Final, Literal

import phonenumbers
import pycountry

from consumer.capi import HASHED_USER_FIELDS, RAW_USER_FIELDS, is_hex_digest
from consumer.errors import PermanentError
from consumer.records import Conversion

DobOrder = Literal["mdy", "dmy"]

_NON_DIGITS = re.compile(r"\D+")
_TRUNK_ZERO = re.compile(r"\(0\)")
_US_ZIP = re.compile(r"(\d{5})(?:[-\s]?\d{4})?")
_ISO_DATE = re.compile(r"(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})(?:[T\s].*)?")
_COMPACT_DATE = re.compile(r"(\d{4})(\d{2})(\d{2})")
_OTHER_DATE = re.compile(r"(\d{1,2})[-/.](\d{1,2})[-/.](\d{4})")
_HEX64_ANY_CASE = re.compile(r"[0-9a-fA-F]{64}")
DIGEST_CACHE_SIZE: Final = 65536

_GENDERS: Final = {
    "f": "f", "female": "f", "woman": "f", "w": "f", "girl": "f",
    "m": "m", "male": "m", "man": "m", "boy": "m",
    "n": "n", "non-binary": "n", "nonbinary": "n", "non_binary": "n", "nb": "n",
    "x": "n", "other": "n", "diverse": "n", "unspecified": "n", "unknown": "n", "u": "n",
}  # fmt: skip
# Country names people type that ISO does not list under that spelling.
_COUNTRY_ALIASES: Final = {
    "usa": "us", "u.s.": "us", "u.s.a.": "us", "united states of america": "us",
    "america": "us", "uk": "gb", "u.k.": "gb", "great britain": "gb", "england": "gb",
    "scotland": "gb", "wales": "gb", "northern ireland": "gb", "russia": "ru",
    "south korea": "kr", "korea": "kr", "north korea": "kp", "vietnam": "vn", "iran": "ir",
    "syria": "sy", "taiwan": "tw", "bolivia": "bo", "venezuela": "ve", "tanzania": "tz",
    "moldova": "md", "czech republic": "cz", "holland": "nl", "the netherlands": "nl",
    "ivory coast": "ci", "laos": "la", "turkey": "tr", "uae": "ae",
}  # fmt: skip


@dataclasses.dataclass(frozen=True, slots=True)
class NormalizeOptions:
    default_phone_country: str = "US"
    dob_order: DobOrder = "mdy"


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def _text(value: str) -> str:
    # NFC so that "é" typed as e + combining accent hashes like the precomposed letter.
    return unicodedata.normalize("NFC", value).strip()


def normalize_email(value: str) -> str:
    return _text(value).lower()


def normalize_name(value: str) -> str:
    return _text(value).lower()


def normalize_external_id(value: str) -> str:
    return _text(value)


def normalize_maid(value: str) -> str:
    return _text(value).lower()


def normalize_city(value: str) -> str:
    return "".join(ch for ch in _text(value).lower() if ch.isalnum())


@lru_cache(maxsize=512)
def calling_code(region: str) -> int:
    """The international calling code of an ISO alpha-2 region, 0 when unknown."""
    return int(phonenumbers.country_code_for_region(region.upper()))


def normalize_phone(value: str, default_country: str = "US") -> str:
    """Digits with country code, no leading zeros: '+1 (650) 555-1234' → '16505551234'.

    A number without '+' or '00' is national: its trunk zeros go and the default country's
    calling code is put in front (unless a NANP number already starts with 1).
    """
    text = _TRUNK_ZERO.sub("", _text(value))
    is_international = text.startswith("+")
    digits = _NON_DIGITS.sub("", text)
    if not digits:
        return ""
    if is_international:
        return digits.lstrip("0")
    if digits.startswith("00"):
        return digits.lstrip("0")
    code = calling_code(default_country)
    national = digits.lstrip("0")
    if code == 1 and len(national) == 11 and national.startswith("1"):
        return national
    if code == 0:
        return national
    return f"{code}{national}"


def normalize_gender(value: str) -> str:
    return _GENDERS.get(_text(value).lower(), "")


def _yyyymmdd(year: int, month: int, day: int) -> str:
    try:
        return dt.date(year, month, day).strftime("%Y%m%d")
    except ValueError:
        return ""


def normalize_dob(value: str | dt.date, order: DobOrder = "mdy") -> str:
    """A date of birth as YYYYMMDD from ISO dates, YYYYMMDD, MM/DD/YYYY or DD/MM/YYYY."""
    if isinstance(value, dt.date):
        return value.strftime("%Y%m%d")
    text = _text(value)
    if match := _ISO_DATE.fullmatch(text):
        year, month, day = (int(g) for g in match.groups())
        return _yyyymmdd(year, month, day)
    if match := _COMPACT_DATE.fullmatch(text):
        year, month, day = (int(g) for g in match.groups())
        return _yyyymmdd(year, month, day)
    if match := _OTHER_DATE.fullmatch(text):
        first, second, year = (int(g) for g in match.groups())
        month, day = (first, second) if order == "mdy" else (second, first)
        if month > 12 >= day:  # unambiguous despite the configured order
            month, day = day, month
        return _yyyymmdd(year, month, day)
    return ""


@lru_cache(maxsize=4096)
def normalize_country(value: str) -> str:
    """ISO-3166 alpha-2, lowercase, from a code (alpha-2/alpha-3) or an English name."""
    text = _text(value).lower()
    if not text:
        return ""
    if text in _COUNTRY_ALIASES:
        return _COUNTRY_ALIASES[text]
    try:
        return str(pycountry.countries.lookup(text).alpha_2).lower()
    except LookupError:
        return ""  # guessing (fuzzy search) could hash the wrong country; omit the field


@lru_cache(maxsize=1)
def _us_states() -> dict[str, str]:
    states: dict[str, str] = {}
    subdivisions: Any = pycountry.subdivisions
    for sub in subdivisions.get(country_code="US") or ():
        code = str(sub.code).split("-", 1)[1].lower()
        states[str(sub.name).lower()] = code
        states[code] = code
    return states


def normalize_state(value: str) -> str:
    """A two-letter lowercase code; US state names are turned into their code."""
    text = _text(value).lower()
    if len(text) == 2 and text.isalpha():
        return text
    return _us_states().get(text, "")


def normalize_zip(value: str) -> str:
    """US zips become their first 5 digits; other postcodes keep letters and digits only.

    The fact sheet says 'digits only'; applied to 'SW1A 1AA' that would leave '11' and match
    nothing, so non-US postcodes keep their letters (lowercased).
    """
    text = _text(value)
    if match := _US_ZIP.fullmatch(text):
        return match.group(1)
    return "".join(ch for ch in text.lower() if ch.isalnum())


def _normalizer(field: str, options: NormalizeOptions) -> Callable[[str], str]:
    match field:
        case "em":
            return normalize_email
        case "ph":
            return lambda v: normalize_phone(v, options.default_phone_country)
        case "fn" | "ln":
            return normalize_name
        case "ge":
            return normalize_gender
        case "db":
            return lambda v: normalize_dob(v, options.dob_order)
        case "ct":
            return normalize_city
        case "st":
            return normalize_state
        case "zp":
            return normalize_zip
        case "country":
            return normalize_country
        case "external_id":
            return normalize_external_id
        case "hashed_maids":
            return normalize_maid
    raise ValueError(f"{field} is not a hashed user_data field")


def _digester(normalize: Callable[[str], str]) -> Callable[[str], str | None]:
    def digest(raw: str) -> str | None:
        stripped = raw.strip()
        if len(stripped) == 64 and _HEX64_ANY_CASE.fullmatch(stripped):
            return stripped.lower()
        normalized = normalize(raw)
        return sha256_hex(normalized) if normalized else None

    return digest


class UserDataHasher:
    """Normalizes and hashes user_data fields, with a bounded LRU digest cache per field keyed by
    the raw value (names and cities repeat ~98% of the time, emails ~30%)."""

    def __init__(self, options: NormalizeOptions, cache_size: int = DIGEST_CACHE_SIZE) -> None:
        self.options = options
        self._digesters: dict[str, Callable[[str], str | None]] = {}
        for field in HASHED_USER_FIELDS:
            digest = _digester(_normalizer(field, options))
            self._digesters[field] = lru_cache(maxsize=cache_size)(digest) if cache_size else digest

    def digest(self, field: str, raw: object) -> str | None:
        """The digest of one raw value, or None when it normalizes to nothing."""
        if type(raw) is str:
            return self._digesters[field](raw)
        if field == "db" and isinstance(raw, dt.date):  # Avro `date` logical type
            return sha256_hex(normalize_dob(raw))
        raise PermanentError("normalize.wrong_type", f"user_data.{field} must be a string")

    def hash_user_data(self, raw: dict[str, Any]) -> dict[str, Any]:
        user_data: dict[str, Any] = {}
        digesters = self._digesters
        for field, value in raw.items():
            if field in RAW_USER_FIELDS:
                if type(value) is str and (value := value.strip()):
                    user_data[field] = value
                continue
            if type(value) is str:  # the common case: one value, straight to the cache
                if (single := digesters[field](value)) is not None:
                    user_data[field] = [single]
                continue
            digests = []
            for item in value if type(value) is list else [value]:
                if item is not None and (one := self.digest(field, item)) and one not in digests:
                    digests.append(one)
            if digests:
                user_data[field] = digests
        return user_data


def format_decimal(value: object, field: str) -> str:
    """A money-like value as a plain decimal string without float artefacts or exponents."""
    if isinstance(value, bool):
        raise PermanentError("normalize.wrong_type", f"{field} must be a number, not a boolean")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise PermanentError("normalize.not_finite", f"{field} must be a finite number")
        number = Decimal(repr(value))  # repr is the shortest round-trip form: 72.39, not 72.38999
    elif isinstance(value, int | Decimal):
        number = Decimal(value)
    elif isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            raise PermanentError("normalize.not_a_number", f"{field} is not a number") from None
    else:
        raise PermanentError("normalize.wrong_type", f"{field} must be a number or string")
    if not number.is_finite():
        raise PermanentError("normalize.not_finite", f"{field} must be a finite number")
    text = format(number, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


@lru_cache(maxsize=256)
def normalize_currency(value: str) -> str:
    code = value.strip().upper()
    if pycountry.currencies.get(alpha_3=code) is None:
        raise PermanentError("normalize.bad_currency", "custom_data.currency is not ISO-4217")
    return code


def format_int(value: object, field: str) -> int:
    if isinstance(value, bool):
        raise PermanentError("normalize.wrong_type", f"{field} must be an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    raise PermanentError("normalize.wrong_type", f"{field} must be an integer")


def _string(value: object) -> str:
    return value if isinstance(value, str) else str(value)


def _normalize_contents(contents: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for i, content in enumerate(contents):
        item: dict[str, Any] = {}
        for key, value in content.items():
            if value is None:
                continue
            name = f"custom_data.contents[{i}].{key}"
            if key == "item_price":
                item[key] = format_decimal(value, name)
            elif key == "quantity":
                item[key] = format_int(value, name)
            else:
                item[key] = _string(value)
        out.append(item)
    return out


def normalize_custom_data(raw: dict[str, Any]) -> dict[str, Any]:
    custom: dict[str, Any] = {}
    for key, value in raw.items():
        if value is None:
            continue
        name = f"custom_data.{key}"
        if key in ("value", "predicted_ltv"):
            custom[key] = format_decimal(value, name)
        elif key == "currency":
            custom[key] = normalize_currency(_string(value))
        elif key == "num_items":
            custom[key] = format_int(value, name)
        elif key == "content_ids":
            custom[key] = [_string(v) for v in value if v is not None]
        elif key == "contents":
            custom[key] = _normalize_contents(value)
        else:
            custom[key] = _string(value)
    return custom


def normalize_conversion(conversion: Conversion, hasher: UserDataHasher) -> Conversion:
    """Hash user_data and format custom_data. Raises `PermanentError` naming the field."""
    event = dict(conversion.event)
    event["user_data"] = hasher.hash_user_data(event.get("user_data", {}))
    if "custom_data" in event:
        custom = normalize_custom_data(event["custom_data"])
        if custom:
            event["custom_data"] = custom
        else:
            del event["custom_data"]
    # Built directly: dataclasses.replace introspects the fields on every call (~2% of CPU).
    return Conversion(
        conversion.coords,
        conversion.ad_account,
        conversion.event_id,
        conversion.event_time_s,
        conversion.event_name,
        event,
        conversion.envelope,
        conversion.span_context,
    )


__all__ = ["NormalizeOptions", "UserDataHasher", "is_hex_digest", "normalize_conversion"]
