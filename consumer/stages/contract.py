"""The contract of the stages that hold records between the engine and an I/O edge.

In the style of arroyo's `ProcessingStrategy`: the batcher (events waiting for a request), the
delivery (requests in flight and their retries) and the dead-letter writer (records waiting for
Kafka's acknowledgement) all hold work whose fate is not final yet, and the engine drives them
through these four calls only. Each reports fates through the callback it was built with; none
ever drops work silently. Add a holding stage by implementing this and naming it in
`engine/pipeline.py`, the one place stages are wired together.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

from consumer.records import AdAccountId, Batch

Item = TypeVar("Item", contravariant=True)


class HoldingStage(Protocol[Item]):
    @property
    def is_full(self) -> bool:
        """True while the stage holds as much as it should: the engine accepts no more records
        (the source pauses its partitions) until it turns False. Never blocks."""
        ...

    def submit(self, item: Item) -> None:
        """Take `item`. Never blocks and never refuses (callers look at `is_full` first);
        returning means the stage owns it until it reports the item's fate."""
        ...

    async def drain(self, deadline_s: float) -> bool:
        """Finish the work held, until the monotonic `deadline_s`: True once nothing is held.
        May wait on I/O; a revoke and a shutdown call it before committing."""
        ...

    async def close(self) -> None:
        """Let go of I/O resources. Work still held is abandoned without a fate: its offsets
        were never committed, so the partition's next owner reads it again."""
        ...


class Delivery(HoldingStage[Batch], Protocol):
    """A holding stage for requests, with what health and insight read of it."""

    halted: dict[AdAccountId, str]  # accounts that wait for configuration, with why
    in_flight_events: int
    last_success_s: float | None
