"""The user_data hasher: raw values → normalized (`userdata.USER_DATA_FIELDS`) → SHA-256, cached.

Pure apart from its bounded LRU caches. A value that cannot be normalized is omitted with the
reason (`values.DropReason`); already-hashed values are never hashed twice. Change a field's rule
in `userdata.py`; change how values are fed to the rules, or cached, here.
"""

from __future__ import annotations

import datetime as dt
import math
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
    Omitted,
    UserField,
    date_of_birth,
    sha256_hex,
)
from consumer.conversion.values import MAX_ITEMS, MAX_TEXT_CHARS, DropReason

DIGEST_CACHE_SIZE: Final = 65536


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

    def __init__(self, options: NormalizeOptions, cache_size: int = DIGEST_CACHE_SIZE) -> None:
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

    def hash_user_data(self, raw: dict[str, Any]) -> tuple[dict[str, Any], Dropped]:
        """Hashed user_data and the fields left out of it, with why (never the values)."""
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
