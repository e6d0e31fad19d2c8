"""The user_data fields Pinterest matches on, in one table, and how each is normalized and hashed.

Pure functions. A value that cannot be normalized is omitted with a reason (the event still goes
out with its other identifiers); already-hashed values (64 hex characters) are never hashed twice.
Adding a field means one `UserField` row here (and its normalizer, beside the others): the
hasher (`hashing.py`), the validator, match quality and `consumer transform --summary` all read
`USER_DATA_FIELDS`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import re
import unicodedata
from collections.abc import Callable
from functools import cache, lru_cache
from typing import Any, Final, Literal

import phonenumbers
import pycountry

from consumer.conversion.values import DropReason

DobOrder = Literal["mdy", "dmy"]

HEX64_ANY_CASE = re.compile(r"[0-9a-fA-F]{64}")
_NOT_ALNUM = re.compile(r"[\W_]+")
_NANP_PUNCTUATION = re.compile(r"[\s().\-]+")
_PLAIN_PHONE = re.compile(r"\+?[\d\s().\-/]+")
_NON_DIGITS = re.compile(r"\D+")


@dataclasses.dataclass(frozen=True, slots=True)
class NormalizeOptions:
    default_phone_country: str = "US"
    dob_order: DobOrder = "mdy"


class Omitted(Exception):
    """Raised by a normalizer for a value that states no value (unknown gender, 'N/A' zip)."""

    def __init__(self, reason: DropReason = "no_value") -> None:
        super().__init__(reason)
        self.reason: DropReason = reason


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def is_hex_digest(value: str) -> bool:
    """True for a lowercase 64-character hex string: an already hashed value."""
    return len(value) == 64 and not value.strip("0123456789abcdef")


def _text(value: str) -> str:
    # NFC so that "é" typed as e + combining accent hashes like the precomposed letter.
    return unicodedata.normalize("NFC", value).strip()


def _folded_key(value: str) -> str:
    """Lowercase ASCII letters and digits only: 'N.J.' → 'nj', 'Québec' → 'quebec'."""
    ascii_text = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode()
    return _NOT_ALNUM.sub("", ascii_text.lower())


def normalize_email(value: str, options: NormalizeOptions) -> str:
    email = _text(value).lower()
    local, at, domain = email.partition("@")
    # Anything else hashes to a digest that matches nobody: say so instead of sending it.
    return email if at and local and domain and "@" not in domain else ""


def normalize_name(value: str, options: NormalizeOptions) -> str:
    return _text(value).lower()


def normalize_external_id(value: str, options: NormalizeOptions) -> str:
    return _text(value)


_ZERO_MAID: Final = re.compile(r"[0\-]+")


def normalize_maid(value: str, options: NormalizeOptions) -> str:
    maid = _text(value).lower()
    if _ZERO_MAID.fullmatch(maid):
        raise Omitted()  # the all-zero id: a device that opted out of ad tracking
    return maid


def normalize_city(value: str, options: NormalizeOptions) -> str:
    return "".join(ch for ch in _text(value).lower() if ch.isalnum())


def normalize_phone(value: str, options: NormalizeOptions) -> str:
    """E.164 digits without '+': country code and national number, no extension.

    '+1 (650) 555-1234' → '16505551234', Italy's '06 6982 1234' → '390669821234', Russia's
    '8 (495) 123-45-67' → '74951234567'. Numbers without a country are read in the default
    country; impossible or local-only numbers are invalid.
    """
    text = _text(value)
    region = options.default_phone_country
    if region in _NANP_REGIONS and (fast := _nanp_digits(text)):
        return fast
    if text.startswith("00"):  # the international prefix most of the world dials
        text = "+" + text[2:]
    if _PLAIN_PHONE.fullmatch(text):  # digits and separators only: the parser is ~30% faster
        is_international = text.startswith("+")  # on bare digits than on the typed form
        if is_international:
            text = text.replace("(0)", "", 1)  # '+44 (0)20 …': the trunk 0 is not dialled
            text = "+" + _NON_DIGITS.sub("", text)
            if fast := international_digits(text):
                return fast
        else:
            text = _NON_DIGITS.sub("", text)
    return parsed_e164(text, region)


def parsed_e164(text: str, region: str) -> str:
    """The E.164 digits by the full parser (~20-45 µs), '' for an impossible number."""
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return ""
    if phonenumbers.is_possible_number_with_reason(number) != _IS_POSSIBLE:
        return ""
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))[1:]


_IS_POSSIBLE: Final = phonenumbers.ValidationResult.IS_POSSIBLE
_COUNTRY_CODES: Final = frozenset(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)


@cache
def _national_prefix(country_code: int) -> re.Pattern[str] | None:
    """What the parser would try to strip after this country code (a trunk prefix, a carrier
    code), from the same metadata it reads."""
    region = phonenumbers.region_code_for_country_code(country_code)
    metadata = phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(country_code, region)
    pattern = metadata.national_prefix_for_parsing if metadata is not None else None
    return re.compile(pattern) if pattern else None


def international_digits(text: str) -> str:
    """'+' and digits (`normalize_phone` removed the rest) → the E.164 digits without the
    parser (~2 µs against 20-45), or '' wherever the parser could answer differently: no
    country code, a national number that starts with 0 (Italy keeps it) or with what the
    country's metadata strips as a prefix, a length outside 2-17 or not possible there.
    `tests/test_userdata.py` holds it to the parser's answer on numbers of every region."""
    digits = text[1:]
    if len(digits) <= 2 or digits[0] == "0":
        return ""
    for width in (1, 2, 3):
        country_code = int(digits[:width])
        if country_code in _COUNTRY_CODES:
            break
    else:
        return ""
    national = digits[width:]
    if not 2 <= len(national) <= 17 or national[0] == "0":
        return ""
    prefix = _national_prefix(country_code)
    if prefix is not None and prefix.match(national):
        return ""
    number = phonenumbers.PhoneNumber(country_code=country_code, national_number=int(national))
    if phonenumbers.is_possible_number_with_reason(number) != _IS_POSSIBLE:
        return ""
    return digits


_NANP_REGIONS: Final = frozenset(phonenumbers.region_codes_for_country_code(1))


def _nanp_digits(text: str) -> str:
    """The common North American forms without the parser (~25 µs each): '' when unsure."""
    if text[:1] == "+" and text[1:2] != "1":
        return ""  # another country's number: not worth the substitution below
    digits = _NANP_PUNCTUATION.sub("", text)
    if digits.startswith("+1"):
        digits = digits[1:]
    elif digits.startswith("+"):
        return ""
    if not digits.isdigit() or not digits.isascii():
        return ""
    if len(digits) == 10 and digits[0] not in "01":
        return "1" + digits
    if len(digits) == 11 and digits[0] == "1" and digits[1] not in "01":
        return digits
    return ""


_FEMALE: Final = ("f", "female", "woman", "women", "w", "girl", "feminine", "fem", "femme",
                  "femenino", "femenina", "weiblich", "mujer")  # fmt: skip
_MALE: Final = ("m", "male", "man", "men", "boy", "masculine", "masc", "homme", "masculino",
                "mannlich", "maennlich", "hombre")  # fmt: skip
_NON_BINARY: Final = ("n", "nonbinary", "nb", "enby", "genderqueer")
# Values that state no gender: sending 'n' for them would be a false statement.
_NO_GENDER: Final = ("u", "x", "unknown", "other", "unspecified", "notspecified", "notstated",
                     "prefernottosay", "prefersnottosay", "prefernottoanswer", "declined",
                     "declinetostate", "na", "none", "null", "diverse")  # fmt: skip
_GENDERS: Final = {
    **dict.fromkeys(_FEMALE, "f"),
    **dict.fromkeys(_MALE, "m"),
    **dict.fromkeys(_NON_BINARY, "n"),
}


def normalize_gender(value: str, options: NormalizeOptions) -> str:
    key = _folded_key(value)
    if key in _NO_GENDER or not key:
        raise Omitted()
    return _GENDERS.get(key, "")


_MONTH_NAMES: Final = ("january", "february", "march", "april", "may", "june", "july",
                      "august", "september", "october", "november", "december")  # fmt: skip
_MONTHS: Final = {
    **{name: number for number, name in enumerate(_MONTH_NAMES, start=1)},
    **{name[:3]: number for number, name in enumerate(_MONTH_NAMES, start=1)},
    "sept": 9,
}
_MONTH = r"(?P<month>[a-z]+)\.?"
_DAY = r"(?P<day>\d{1,2})(?:st|nd|rd|th)?"
_YEAR = r"(?P<year>\d{4})"
_DATE_FORMS: Final = tuple(
    re.compile(form)
    for form in (
        rf"{_YEAR}[-/.](?P<m>\d{{1,2}})[-/.]{_DAY}(?:[t\s].*)?",  # ISO, with or without a time
        rf"{_YEAR}(?P<m>\d{{2}})(?P<day>\d{{2}})",  # YYYYMMDD
        rf"(?P<first>\d{{1,2}})[-/.](?P<second>\d{{1,2}})[-/.]{_YEAR}",  # MM/DD or DD/MM
        rf"{_MONTH}[\s-]*{_DAY},?[\s-]*{_YEAR}",  # Mar 5, 1987; March 5th, 1987
        rf"{_DAY}[\s-]*(?:of\s+)?{_MONTH},?[\s-]*{_YEAR}",  # 5 March 1987; 05-Mar-1987
        rf"{_YEAR}[\s-]*{_MONTH}[\s-]*{_DAY}",  # 1987-Mar-05
    )
)
_OLDEST_BIRTH_YEAR: Final = 1900


def _yyyymmdd(year: int, month: int, day: int) -> str:
    if year < _OLDEST_BIRTH_YEAR:
        return ""
    try:
        return dt.date(year, month, day).strftime("%Y%m%d")
    except ValueError:
        return ""  # 31 February and friends


def normalize_dob(value: str, options: NormalizeOptions) -> str:
    """YYYYMMDD from ISO dates, YYYYMMDD, MM/DD/YYYY or DD/MM/YYYY, and English month names."""
    text = _text(value).lower()
    for form in _DATE_FORMS:
        if match := form.fullmatch(text):
            parts = match.groupdict()
            year = int(parts["year"])
            if parts.get("first") is not None:
                first, second = int(parts["first"]), int(parts["second"])
                month, day = (first, second) if options.dob_order == "mdy" else (second, first)
                if month > 12 >= day:  # unambiguous despite the configured order
                    month, day = day, month
                return _yyyymmdd(year, month, day)
            if parts.get("m") is not None:
                return _yyyymmdd(year, int(parts["m"]), int(parts["day"]))
            month_number = _MONTHS.get(parts["month"])
            return _yyyymmdd(year, month_number, int(parts["day"])) if month_number else ""
    return ""


def date_of_birth(value: dt.date) -> str:
    return value.strftime("%Y%m%d")


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


@lru_cache(maxsize=4096)
def _country_code(text: str) -> str:
    if text in _COUNTRY_ALIASES:
        return _COUNTRY_ALIASES[text]
    try:
        return str(pycountry.countries.lookup(text).alpha_2).lower()
    except LookupError:
        return ""  # guessing (fuzzy search) could hash the wrong country; omit the field


def normalize_country(value: str, options: NormalizeOptions) -> str:
    """ISO-3166 alpha-2, lowercase, from a code (alpha-2/alpha-3) or an English name."""
    return _country_code(_text(value).lower())


@lru_cache(maxsize=1)
def _state_codes() -> dict[str, str]:
    """Folded names and codes of US states, Canadian provinces and Australian states."""
    codes: dict[str, str] = {}
    subdivisions: Any = pycountry.subdivisions
    for country in ("AU", "CA", "US"):
        for sub in subdivisions.get(country_code=country) or ():
            code = str(sub.code).split("-", 1)[1].lower()
            codes[_folded_key(str(sub.name))] = code
            codes[code] = code
    return codes


def normalize_state(value: str, options: NormalizeOptions) -> str:
    """The subdivision code, lowercase: 'New Jersey', 'N.J.' and 'NJ' all give 'nj'.

    Names and codes of US states, Canadian provinces and Australian states are known; any
    other two-letter code passes as typed. Australia's own codes are partly three letters (nsw).
    """
    key = _folded_key(value)
    if found := _state_codes().get(key):
        return found
    return key if len(key) == 2 and key.isalpha() else ""


_US_ZIP = re.compile(r"(\d{5})(?:[-\s]?\d{4})?")
_NO_POSTCODE: Final = frozenset({"na", "none", "null", "nil", "notapplicable", "unknown",
                                 "nozip", "nopostcode", "xxxxx"})  # fmt: skip


def normalize_zip(value: str, options: NormalizeOptions) -> str:
    """US ZIPs (and ZIP+4) become their first 5 digits; other postcodes keep letters and digits.

    The fact sheet says 'digits only'; applied to 'SW1A 1AA' that would leave '11' and match
    nothing, so non-US postcodes keep their letters (lowercased).
    """
    text = _text(value)
    if match := _US_ZIP.fullmatch(text):
        if not match.group(1).strip("0"):
            raise Omitted()
        return match.group(1)
    postcode = "".join(ch for ch in text.lower() if ch.isalnum())
    if postcode in _NO_POSTCODE or not postcode.strip("0"):
        raise Omitted()  # placeholders: dashes, zeros, 'N/A'
    return postcode


@lru_cache(maxsize=8)
def native_tables(options: NormalizeOptions) -> dict[str, Any]:
    """The data these rules read, for the compiled copy of them (`hashing.UserDataHasher`):
    each table is taken from, or computed by, the Python rule itself, so the two cannot
    disagree. Computed once per options (0.2 s: every country's phone metadata); read-only."""
    countries: dict[str, str] = {}
    for country in pycountry.countries:
        for attribute in ("alpha_2", "alpha_3", "name", "official_name", "common_name"):
            if (name := getattr(country, attribute, None)) and (
                code := _country_code(name.lower())
            ):
                countries[name.lower()] = code
    countries.update((alias, _country_code(alias)) for alias in _COUNTRY_ALIASES)
    phone: dict[int, tuple[str | None, int]] = {}
    for country_code in _COUNTRY_CODES:
        prefix = _national_prefix(country_code)
        possible = 0
        for length in range(2, 18):  # what `international_digits` lets through
            number = phonenumbers.PhoneNumber(
                country_code=country_code, national_number=int("1" * length)
            )
            if phonenumbers.is_possible_number_with_reason(number) == _IS_POSSIBLE:
                possible |= 1 << length
        phone[country_code] = (prefix.pattern if prefix is not None else None, possible)
    return {
        "genders": dict(_GENDERS),
        "no_gender": list(_NO_GENDER),
        "states": dict(_state_codes()),
        "countries": countries,
        "no_postcode": list(_NO_POSTCODE),
        "phone": phone,
        "default_phone_is_nanp": options.default_phone_country in _NANP_REGIONS,
    }


Normalizer = Callable[[str, NormalizeOptions], str]


@dataclasses.dataclass(frozen=True, slots=True)
class UserField:
    """One user_data field: how it is normalized and what it tells match quality."""

    name: str
    description: str
    # None: sent as a trimmed raw string, never hashed.
    normalize: Normalizer | None
    # The identifier match quality counts it under (IP and user agent count only as a pair).
    match_identifier: str | None
    # A number (Avro int/long/double/decimal) is a natural carrier: turned into its digits.
    accepts_number: bool = False

    @property
    def is_hashed(self) -> bool:
        return self.normalize is not None


USER_DATA_FIELDS: Final = (
    UserField("em", "email address", normalize_email, "em"),
    UserField("hashed_maids", "mobile advertising id (GAID/IDFA)", normalize_maid, "hashed_maids"),
    UserField("ph", "phone number, E.164 digits", normalize_phone, "ph", accepts_number=True),
    UserField(
        "external_id",
        "advertiser's user id",
        normalize_external_id,
        "external_id",
        accepts_number=True,
    ),
    UserField("fn", "first name", normalize_name, "fn"),
    UserField("ln", "last name", normalize_name, "ln"),
    UserField("ge", "gender: f, m or n", normalize_gender, "ge"),
    UserField("db", "date of birth, YYYYMMDD", normalize_dob, "db", accepts_number=True),
    UserField("ct", "city", normalize_city, "ct"),
    UserField("st", "state or province code", normalize_state, "st"),
    UserField("zp", "postcode (US: 5 digits)", normalize_zip, "zp", accepts_number=True),
    UserField("country", "ISO-3166 alpha-2 country", normalize_country, "country"),
    UserField("client_ip_address", "client IPv4 or IPv6 address", None, "ip_ua"),
    UserField("client_user_agent", "client user agent", None, "ip_ua"),
    UserField("click_id", "Pinterest click id (_epik cookie)", None, "click_id"),
    UserField("partner_id", "partner's user id", None, None),
)
FIELDS_BY_NAME: Final = {f.name: f for f in USER_DATA_FIELDS}
HASHED_USER_FIELDS: Final = tuple(f.name for f in USER_DATA_FIELDS if f.is_hashed)
RAW_USER_FIELDS: Final = tuple(f.name for f in USER_DATA_FIELDS if not f.is_hashed)
USER_FIELDS: Final = frozenset(FIELDS_BY_NAME)
MATCH_IDENTIFIERS: Final = tuple(
    dict.fromkeys(f.match_identifier for f in USER_DATA_FIELDS if f.match_identifier)
)
