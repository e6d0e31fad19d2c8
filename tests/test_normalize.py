from __future__ import annotations

import hashlib

from consumer.conversion.hashing import UserDataHasher
from consumer.conversion.normalize import normalize_conversion
from consumer.conversion.userdata import NormalizeOptions
from tests.conftest import ConversionFactory


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_normalize_conversion_hashes_the_mapped_record_keeping_coordinates(
    conversion_factory: ConversionFactory,
) -> None:
    conversion = conversion_factory(offset=7, user_data={"em": "X@Y.z"})
    conversion.dropped = (("event_source_url", "too_long"),)  # the mapping's
    normalized = normalize_conversion(conversion, UserDataHasher(NormalizeOptions()))
    assert normalized is conversion  # in place: the mapped record is the stage's own
    assert normalized.coords.offset == 7
    assert normalized.event["user_data"] == {"em": [sha("x@y.z")]}
    assert normalized.dropped == (("event_source_url", "too_long"),)


def test_normalize_conversion_omits_bad_identifier_keeps_event_and_says_why(
    conversion_factory: ConversionFactory,
) -> None:
    conversion = conversion_factory(user_data={"em": "x@y.z", "ph": "12", "ge": "unknown"})
    normalized = normalize_conversion(conversion, UserDataHasher(NormalizeOptions()))
    assert normalized.event["user_data"] == {"em": [sha("x@y.z")]}
    assert normalized.dropped == (("ph", "invalid"), ("ge", "no_value"))
