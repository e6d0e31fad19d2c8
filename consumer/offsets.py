"""The per-partition offset ledger: which consumed offsets may be committed (pure, no I/O).

Commit order, each step only after the one before succeeded:
1. a record's fate becomes final (delivered, duplicate, skipped, or dead-letter write acked);
2. `finish` records it and the ledger advances the partition's contiguous finished prefix;
3. `source.py` stores `committable()` offsets (last finished offset + 1) with librdkafka;
4. `source.py` commits, on a timer, and forced on revoke and shutdown.
If anything before step 4 fails, nothing is committed: at-least-once may re-send, never lose.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from consumer.records import Coordinates, Fate, TopicPartition


class LedgerError(AssertionError):
    """A broken invariant: a bug in the caller, never bad data."""


@dataclass(slots=True)
class _PartitionLedger:
    generation: int
    pending: deque[int] = field(default_factory=deque)  # consumed offsets, in order
    remaining: dict[int, int] = field(default_factory=dict)  # offset → unfinished events
    last_tracked: int = -1
    committable: int | None = None  # next offset to commit, once something finished
    committed: int | None = None


class OffsetLedger:
    """Tracks every consumed offset until its fate is final; commits only the finished prefix.

    Kafka offsets are not dense (transaction markers, compaction), so the ledger never assumes
    the next record is offset + 1: it commits the last finished offset in consumed order + 1.
    """

    def __init__(self) -> None:
        self._partitions: dict[TopicPartition, _PartitionLedger] = {}
        self.fates: dict[Fate, int] = dict.fromkeys(Fate, 0)
        self.stale_results = 0

    def assign(self, tp: TopicPartition, generation: int) -> None:
        self._partitions[tp] = _PartitionLedger(generation)

    def revoke(self, tp: TopicPartition) -> None:
        self._partitions.pop(tp, None)

    lose = revoke

    def owns(self, tp: TopicPartition, generation: int | None = None) -> bool:
        ledger = self._partitions.get(tp)
        return ledger is not None and (generation is None or ledger.generation == generation)

    def track(self, coords: Coordinates, generation: int, events: int = 1) -> None:
        """Record a consumed offset that will finish after `events` fates (fan-out counts)."""
        ledger = self._partitions.get(coords.topic_partition)
        if ledger is None or ledger.generation != generation:
            raise LedgerError(f"track on a partition not owned: {coords}")
        if coords.offset <= ledger.last_tracked:
            raise LedgerError(f"offsets must increase: {coords} after {ledger.last_tracked}")
        if events < 1:
            raise LedgerError("a tracked offset needs at least one event")
        ledger.last_tracked = coords.offset
        ledger.pending.append(coords.offset)
        ledger.remaining[coords.offset] = events

    def finish(self, coords: Coordinates, generation: int, fate: Fate) -> bool:
        """Mark one event of `coords` final. False (ignored) for a revoked or older assignment."""
        ledger = self._partitions.get(coords.topic_partition)
        if ledger is None or ledger.generation != generation:
            self.stale_results += 1
            return False
        left = ledger.remaining.get(coords.offset)
        if left is None or left == 0:
            raise LedgerError(f"finish on an untracked or finished offset: {coords}")
        ledger.remaining[coords.offset] = left - 1
        self.fates[fate] += 1
        if left == 1 and ledger.pending[0] == coords.offset:
            self._advance(ledger)
        return True

    @staticmethod
    def _advance(ledger: _PartitionLedger) -> None:
        pending, remaining = ledger.pending, ledger.remaining
        last = None
        while pending and remaining[pending[0]] == 0:
            last = pending.popleft()
            del remaining[last]
        if last is not None:
            ledger.committable = Coordinates("", 0, last).next_offset

    def committable(self) -> dict[TopicPartition, int]:
        """Next offsets to store where the finished prefix moved since `mark_committed`."""
        return {
            tp: ledger.committable
            for tp, ledger in self._partitions.items()
            if ledger.committable is not None and ledger.committable != ledger.committed
        }

    def mark_committed(self, offsets: dict[TopicPartition, int]) -> None:
        for tp, offset in offsets.items():
            if (ledger := self._partitions.get(tp)) is not None:
                ledger.committed = offset

    def committed(self, tp: TopicPartition) -> int | None:
        ledger = self._partitions.get(tp)
        return ledger.committed if ledger else None

    def unfinished(self, tp: TopicPartition | None = None) -> int:
        """Offsets consumed but not final, for one partition or all."""
        if tp is not None:
            ledger = self._partitions.get(tp)
            return len(ledger.pending) if ledger else 0
        return sum(len(ledger.pending) for ledger in self._partitions.values())

    def partitions(self) -> list[TopicPartition]:
        return list(self._partitions)
