from collections.abc import Callable
from typing import Any

class Plan:
    """A writer schema compiled for decoding, from `consumer.stages.avroplan.plan_for`."""

    def __init__(self, plan: tuple[Any, ...]) -> None: ...
    def decode(self, value: bytes, offset: int) -> tuple[Any, int] | None:
        """(record, offset after it), or None when fastavro must decide what the bytes are."""

class UserDataKernel:
    """The user_data rules compiled for common inputs, from `consumer.conversion.hashing`."""

    def __init__(
        self,
        rules: dict[str, str | None],
        raw_fields: list[str],
        tables: dict[str, Any],
        fallback: Callable[[str, object], str],
        max_text_chars: int,
        max_items: int,
        cache_slots: int,
    ) -> None: ...
    def hash_user_data(
        self, raw: dict[str, Any]
    ) -> tuple[dict[str, Any], tuple[tuple[str, str], ...]]:
        """`UserDataHasher.hash_user_data`'s answer; what it is unsure of goes to `fallback`."""
