"""Value bounds: the one place that decides whether a record's value fits an API field (pure).

Records come from schemas that are not ours, so any field may hold an integer wider than 64
bits, a NaN, a decimal string whose exponent would print a gigabyte ("1e999999999"), digits
that are not ASCII ("²", "٣"), Avro `bytes`, or a string or array far longer than anything the
API takes. Every text, integer, decimal and array the mapping puts into an event passes through
these functions first; a value that does not fit raises `OutOfBounds` with the reason the field
tables use (`wrong_type`, `invalid`, `too_long`), and the caller leaves the field out (optional
fields) or dead-letters the event naming the field (required ones). Change a limit here.

Pinterest's schema states one length (`app_info.user_agent`, 16,384 characters) and 64-bit
integers; the other limits are ours, generous for real data and small enough that one record
cannot make the process build megabytes.
"""

from __future__ import annotations

import math
from decimal import Context, Decimal, InvalidOperation
from typing import Final, Literal

DropReason = Literal["wrong_type", "invalid", "no_value", "too_long"]

MAX_INT64: Final = 2**63 - 1
MIN_INT64: Final = -(2**63)
MAX_TEXT_CHARS: Final = 16_384  # the spec's limit for a user agent; no free text may be longer
MAX_EVENT_ID_CHARS: Final = 256  # ours: an order id with a suffix fits many times over
MAX_ITEMS: Final = 1_000  # ours: content_ids, contents, and each user_data field's values
# A money value or price: at most 18 digits before the point and 18 after (Pinterest parses it
# into a double, which keeps about 16 significant digits anyway).
MAX_DECIMAL_EXPONENT: Final = 18
_PLACES: Final = Decimal(1).scaleb(-MAX_DECIMAL_EXPONENT)
_WIDE: Final = Context(prec=2 * MAX_DECIMAL_EXPONENT + 2)


class OutOfBounds(ValueError):
    def __init__(self, reason: DropReason) -> None:
        super().__init__(reason)
        self.reason: DropReason = reason


def text(value: object, limit: int = MAX_TEXT_CHARS) -> str:
    """A string field's value: text as it is, bytes read as UTF-8, numbers in their plain
    form. Booleans, NaN, containers and invalid UTF-8 are `wrong_type`; over `limit`,
    `too_long`."""
    if type(value) is str:
        out = value
    elif isinstance(value, bytes):
        try:
            out = value.decode("utf-8")
        except UnicodeDecodeError:
            raise OutOfBounds("wrong_type") from None
    elif isinstance(value, bool):
        raise OutOfBounds("wrong_type")
    elif isinstance(value, int):
        if not MIN_INT64 <= value <= MAX_INT64:
            raise OutOfBounds("invalid")
        out = str(value)
    elif isinstance(value, float | Decimal):
        out = decimal_text(value)
    elif isinstance(value, str):  # a str subclass (an Avro enum symbol)
        out = str(value)
    else:
        raise OutOfBounds("wrong_type")
    if len(out) > limit:
        raise OutOfBounds("too_long")
    return out


def integer(value: object) -> int:
    """A 64-bit integer field: ints, integral floats and Decimals, and strings of ASCII digits."""
    if isinstance(value, bool):
        raise OutOfBounds("wrong_type")
    if isinstance(value, int):
        number = value
    elif isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise OutOfBounds("invalid")
        number = int(value)
    elif isinstance(value, Decimal):
        if not value.is_finite() or value.adjusted() > 19 or value != value.to_integral_value():
            raise OutOfBounds("invalid")
        number = int(value)
    elif isinstance(value, str):
        digits = value.strip()
        unsigned = digits[1:] if digits[:1] in ("-", "+") else digits
        # isascii first: "²".isdigit() is True and int("٣") is 3.
        if not unsigned.isascii() or not unsigned.isdigit():
            raise OutOfBounds("wrong_type")
        if len(unsigned) > 19:
            raise OutOfBounds("invalid")
        number = int(digits)
    else:
        raise OutOfBounds("wrong_type")
    if not MIN_INT64 <= number <= MAX_INT64:
        raise OutOfBounds("invalid")
    return number


def decimal_text(value: object) -> str:
    """A money-like value as a plain decimal string ("72.39"): no float artefacts, no
    exponent, within `MAX_DECIMAL_EXPONENT` digits each side of the point."""
    limit = MAX_DECIMAL_EXPONENT
    # Avro decimals, the common case: str() is the plain form when it has no exponent, and
    # costs a quarter of format(value, "f"). Not remembered by value: hashing a Decimal costs
    # more than formatting it.
    if (
        type(value) is Decimal
        and value
        and value.is_finite()
        and -limit <= value.adjusted() < limit
    ):
        out = str(value)
        point = out.find(".")
        if "E" not in out and "e" not in out:  # "e": a context may print small capitals
            if point < 0:
                return out
            if len(out) - point <= MAX_DECIMAL_EXPONENT + 1:
                return out.rstrip("0").rstrip(".")  # not "" nor "-0": the value is not zero
    if type(value) is Decimal:
        number = value
    elif isinstance(value, bool):
        raise OutOfBounds("wrong_type")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise OutOfBounds("invalid")
        number = Decimal(repr(value))  # the shortest round-trip form: 72.39, not 72.38999…
    elif isinstance(value, Decimal):
        number = value
    elif isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, str):
        stripped = value.strip()
        if not stripped.isascii():  # Decimal("٣") is 3
            raise OutOfBounds("wrong_type")
        try:
            number = Decimal(stripped)
        except InvalidOperation:
            raise OutOfBounds("wrong_type") from None
    else:
        raise OutOfBounds("wrong_type")
    if not number.is_finite():
        raise OutOfBounds("invalid")
    if not number:  # a zero's exponent may be anything: "0e-999999999" would print 1 GB
        return "0"
    if not -MAX_DECIMAL_EXPONENT <= number.adjusted() < MAX_DECIMAL_EXPONENT:
        raise OutOfBounds("invalid")  # checked before formatting: "1e999999999" is 1 GB of "0"
    out = format(number, "f")
    point = out.find(".")
    if point >= 0:
        if len(out) - point - 1 > MAX_DECIMAL_EXPONENT:  # rare: round to 18 places
            out = format(number.quantize(_PLACES, context=_WIDE), "f")
        out = out.rstrip("0").rstrip(".")
    return "0" if out in ("-0", "") else out


def items(value: object, limit: int = MAX_ITEMS) -> list[object]:
    """An array field's values (one value alone becomes a list of one); over `limit`,
    `too_long`."""
    out = value if type(value) is list else [value]
    if len(out) > limit:
        raise OutOfBounds("too_long")
    return out
