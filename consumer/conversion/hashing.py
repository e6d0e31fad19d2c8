"""The user_data hasher: raw values → normalized (`userdata.USER_DATA_FIELDS`) → SHA-256, cached.

Pure apart from its bounded LRU caches. A value that cannot be normalized is omitted with the
reason (`values.DropReason`); already-hashed values are never hashed twice. Change a field's rule
in `userdata.py`; change how values are fed to the rules, or cached, here.

Where the compiled extension is installed (`capi_native`, from native/), a whole user_data dict is
hashed in one call by its copy of the rules (`NATIVE_RULES`), about 4x faster on values never seen
before. That copy answers only where it is certain to agree; everything else (other scripts,
phone numbers that need the full parser, numbers, unknown country names) comes back here, to
`UserDataHasher.digest`. `tests/test_userdata_native.py` holds the two to the same answers.
CAPI_USER_DATA_HASHER=python turns the compiled path off.
"""

from __future__ import annotations

import datetime as dt
import math
import os
from collections.abc import Callable
from decimal import Decimal
from functools import lru_cache
from typing import Any, Final, cast

from consumer.conversion.userdata import (
    FIELDS_BY_NAME,
    HEX64_ANY_CASE,
    RAW_USER_FIELDS,
    USER_DATA_FIELDS,
    NormalizeOptions,
    Normalizer,
    Omitted,
    UserField,
    date_of_birth,
    native_tables,
    normalize_city,
    normalize_country,
    normalize_email,
    normalize_external_id,
    normalize_gender,
    normalize_maid,
    normalize_name,
    normalize_phone,
    normalize_state,
    normalize_zip,
    sha256_hex,
)
from consumer.conversion.values import MAX_ITEMS, MAX_TEXT_CHARS, DropReason

try:
    from capi_native import UserDataKernel
except ImportError:  # the extension is optional: the rules run in Python without it
    UserDataKernel = None  # type: ignore[assignment, misc]

DIGEST_CACHE_SIZE: Final = 65536
# Per rule, in the compiled path's direct-mapped cache: 8192 answers of about 200 bytes each.
NATIVE_CACHE_SLOTS: Final = 8192
HAS_NATIVE_HASHER: Final = UserDataKernel is not None
# CAPI_USER_DATA_HASHER: `auto` hashes with the compiled rules when they are installed; `python`
# never does (a way out should they ever misbehave); `native` requires them.
HASHER_MODES: Final = ("auto", "native", "python")
# The compiled copies of the rules (native/userdata), by the Python normalizer each copies: a
# field whose normalizer is not here (date of birth as text), or is ever replaced by another
# function, is hashed by its Python rule only.
NATIVE_RULES: Final[dict[Normalizer, str]] = {
    normalize_email: "email",
    normalize_maid: "maid",
    normalize_external_id: "external_id",
    normalize_name: "name",
    normalize_gender: "gender",
    normalize_city: "city",
    normalize_state: "state",
    normalize_zip: "zip",
    normalize_country: "country",
    normalize_phone: "phone",
}


def hasher_in_use(mode: str | None = None) -> str:
    """ "native" or "python" for a mode; None: CAPI_USER_DATA_HASHER as `config` reads it, so
    what is built without a configuration (transform, the benchmark, tests) follows it too."""
    if mode is None:
        mode = os.environ.get("CAPI_USER_DATA_HASHER", "auto").strip().lower()
    return "native" if HAS_NATIVE_HASHER and mode != "python" else "python"


def native_kernel(
    options: NormalizeOptions, fallback: Callable[[str, object], str], cache_slots: int
) -> Any:
    """The compiled rules (`capi_native.UserDataKernel`) for every hashed field that has them,
    with `fallback(field, value)` (a hasher's `digest`) for whatever they hand back."""
    rules = {
        field.name: NATIVE_RULES.get(field.normalize) if field.normalize else None
        for field in USER_DATA_FIELDS
        if field.is_hashed
    }
    return UserDataKernel(
        rules,
        list(RAW_USER_FIELDS),
        native_tables(options),
        fallback,
        MAX_TEXT_CHARS,
        MAX_ITEMS,
        cache_slots,
    )


def _date_digest(value: dt.date) -> str:
    return sha256_hex(date_of_birth(value))


def number_text(value: object) -> str | None:
    """The canonical digits of an integral number (int, integral float or Decimal), else None."""
    if type(value) is int:
        return str(value)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    if (
        isinstance(value, Decimal)
        and value.is_finite()
        and value.adjusted() <= 30  # int(Decimal("1e999999999")) is a billion digits
        and value == value.to_integral_value()
    ):
        return str(int(value))
    return None


def _digester(field: UserField, options: NormalizeOptions) -> Callable[[str], str]:
    """raw text → its digest (64 hex) or the reason it is omitted ('' when simply empty)."""
    normalize = field.normalize
    assert normalize is not None

    def digest(raw: str) -> str:
        stripped = raw.strip()
        if len(stripped) == 64 and HEX64_ANY_CASE.fullmatch(stripped):
            return stripped.lower()
        if not stripped:
            return ""
        try:
            normalized = normalize(raw, options)
        except Omitted as omitted:
            return omitted.reason
        return sha256_hex(normalized) if normalized else "invalid"

    return digest


Dropped = tuple[tuple[str, DropReason], ...]


class UserDataHasher:
    """Normalizes and hashes user_data fields, with a bounded LRU digest cache per field keyed by
    the raw value (names and cities repeat ~98% of the time, emails ~30%)."""

    def __init__(
        self,
        options: NormalizeOptions,
        cache_size: int = DIGEST_CACHE_SIZE,
        mode: str | None = None,
    ) -> None:
        self.options = options
        self._digesters: dict[str, Callable[[str], str]] = {}
        for field in USER_DATA_FIELDS:
            if field.is_hashed:
                digest = _digester(field, options)
                cached = lru_cache(maxsize=cache_size)(digest) if cache_size else digest
                self._digesters[field.name] = cached
        # Avro `date` values: birthdays repeat like names do.
        self._date_digest: Callable[[dt.date], str] = (
            lru_cache(maxsize=cache_size)(_date_digest) if cache_size else _date_digest
        )
        self.implementation = hasher_in_use(mode)
        # Bound once: a Python method in between costs more than the kernel's lookups.
        self.hash_user_data: Callable[[dict[str, Any]], tuple[dict[str, Any], Dropped]] = (
            native_kernel(
                options, self.digest, NATIVE_CACHE_SLOTS if cache_size else 0
            ).hash_user_data
            if self.implementation == "native"
            else self.hash_in_python
        )

    def digest(self, field: str, raw: object) -> str:
        """The digest of one raw value, '' when empty, or the `DropReason` it is omitted for."""
        if type(raw) is str:
            return self._digesters[field](raw) if len(raw) <= MAX_TEXT_CHARS else "too_long"
        if field == "db" and isinstance(raw, dt.date):  # Avro `date` logical type
            return self._date_digest(raw)
        if isinstance(raw, bool) or not FIELDS_BY_NAME[field].accepts_number:
            return "wrong_type"
        text = number_text(raw)
        return "wrong_type" if text is None else self._digesters[field](text)

    def hash_in_python(self, raw: dict[str, Any]) -> tuple[dict[str, Any], Dropped]:
        """Hashed user_data and the fields left out of it, with why (never the values), by the
        Python rules alone: `hash_user_data` without the compiled path, which is held to it."""
        user_data: dict[str, Any] = {}
        dropped: list[tuple[str, DropReason]] = []
        digesters = self._digesters
        for field, value in raw.items():
            if field in RAW_USER_FIELDS:
                if type(value) is str:
                    if len(value) > MAX_TEXT_CHARS:
                        dropped.append((field, "too_long"))
                    elif value := value.strip():
                        user_data[field] = value
                elif value is not None:
                    dropped.append((field, "wrong_type"))
                continue
            if type(value) is str and len(value) <= MAX_TEXT_CHARS:  # the common case
                single = digesters[field](value)
                if len(single) == 64:
                    user_data[field] = [single]
                elif single:
                    dropped.append((field, cast(DropReason, single)))
                continue
            if type(value) is list and len(value) > MAX_ITEMS:
                dropped.append((field, "too_long"))
                continue
            digests: list[str] = []
            for item in value if type(value) is list else [value]:
                if item is None:
                    continue
                one = self.digest(field, item)
                if len(one) == 64:
                    if one not in digests:
                        digests.append(one)
                elif one:
                    dropped.append((field, cast(DropReason, one)))
            if digests:
                user_data[field] = digests
        return user_data, tuple(dropped)
