"""The normalize stage: user_data hashed through `conversion.userdata`.

`normalize_conversion` takes a mapped `Conversion` with raw user_data and makes it ready to send,
with the user_data fields it had to leave out (and why) added to `Conversion.dropped`; no I/O.
custom_data was formatted as the rule read it (`conversion.formats`).
"""

from __future__ import annotations

from consumer.conversion.capi import MISSING_IDENTIFIER, has_required_identifier
from consumer.conversion.hashing import UserDataHasher
from consumer.conversion.userdata import NormalizeOptions
from consumer.errors import PermanentError
from consumer.records import Conversion


def normalize_conversion(conversion: Conversion, hasher: UserDataHasher) -> Conversion:
    """Hash the mapped event's user_data, in place: the mapped Conversion is this stage's own
    (the mapper made it for this call; a copy and a second Conversion per record cost 1 µs).
    Raises `PermanentError` when no identifier is left."""
    event = conversion.event
    event["user_data"], hashed_dropped = hasher.hash_user_data(event.get("user_data", {}))
    if not has_required_identifier(event["user_data"]):
        raise PermanentError("validate.invalid_event", MISSING_IDENTIFIER)
    if hashed_dropped:
        conversion.dropped = (*conversion.dropped, *hashed_dropped)
    return conversion


__all__ = ["NormalizeOptions", "UserDataHasher", "normalize_conversion"]
