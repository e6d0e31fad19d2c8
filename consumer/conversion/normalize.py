"""The normalize stage: user_data hashed through `conversion.userdata`.

Pure functions: `normalize_conversion` takes a mapped `Conversion` with raw user_data and returns
one ready to send, with the user_data fields it had to leave out (and why) added to
`Conversion.dropped`. custom_data was formatted as the rule read it (`conversion.customdata`).
"""

from __future__ import annotations

from consumer.conversion.capi import MISSING_IDENTIFIER, has_required_identifier
from consumer.conversion.hashing import UserDataHasher
from consumer.conversion.userdata import NormalizeOptions
from consumer.errors import PermanentError
from consumer.records import Conversion


def normalize_conversion(conversion: Conversion, hasher: UserDataHasher) -> Conversion:
    """Hash user_data. Raises `PermanentError` when no identifier is left."""
    event = dict(conversion.event)
    event["user_data"], hashed_dropped = hasher.hash_user_data(event.get("user_data", {}))
    dropped: tuple[tuple[str, str], ...] = hashed_dropped
    if conversion.dropped:  # top-level fields the mapping left out
        dropped = (*conversion.dropped, *hashed_dropped)
    if not has_required_identifier(event["user_data"]):
        raise PermanentError("validate.invalid_event", MISSING_IDENTIFIER)
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
        dropped,
    )


__all__ = ["NormalizeOptions", "UserDataHasher", "normalize_conversion"]
