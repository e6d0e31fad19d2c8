from typing import Any

class Plan:
    """A writer schema compiled for decoding, from `consumer.stages.avroplan.plan_for`."""

    def __init__(self, plan: tuple[Any, ...]) -> None: ...
    def decode(self, value: bytes, offset: int) -> tuple[Any, int] | None:
        """(record, offset after it), or None when fastavro must decide what the bytes are."""
