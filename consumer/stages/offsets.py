"""The per-partition offset ledger: which consumed offsets may be committed (pure, no I/O).

Commit order, each step only after the one before succeeded:
1. a record's fate becomes final (delivered, duplicate, skipped, or dead-letter write acked);
2. `finish` records it and the ledger advances the partition's contiguous finished prefix;
3. `source.py` stores `commits()` (last finished offset + 1, with the map of offsets past it that
   are final already in the commit's metadata) with librdkafka;
4. `source.py` commits, every ~100 ms when something changed, and forced on revoke and shutdown.
If anything before step 4 fails, nothing is committed: at-least-once may re-send, never lose.
The next owner of a partition reads the map back (`assign`) and skips the offsets it marks.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection
from dataclasses import dataclass, field

from consumer.records import Commit, Coordinates, Fate, TopicPartition
from consumer.stages.offsetmap import MAX_METADATA_BYTES, decode_final_offsets, encode_final_offsets


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
    committed_metadata: str = ""
    # Offsets past the committed one that an earlier owner marked final: never processed again.
    final_before: set[int] = field(default_factory=set)
    map_base: int = -1  # the committed offset the map was written against
    is_map_checked: bool = False
    # Counts offsets finished past the prefix, so a commit knows whether its map is current.
    marks_version: int = 0
    offered_version: int = 0
    committed_version: int = 0


def _is_current(ledger: _PartitionLedger) -> bool:
    """Neither the prefix nor the map of final offsets moved since the last commit."""
    # No prefix yet (None) is current: a commit then only ever carries the map.
    has_same_prefix = ledger.committable is None or ledger.committable == ledger.committed
    return has_same_prefix and ledger.marks_version == ledger.committed_version


class OffsetLedger:
    """Tracks every consumed offset until its fate is final; commits only the finished prefix.

    Kafka offsets are not dense (transaction markers, compaction), so the ledger never assumes
    the next record is offset + 1: it commits the last finished offset in consumed order + 1.
    """

    def __init__(self, max_metadata_bytes: int = MAX_METADATA_BYTES) -> None:
        self._partitions: dict[TopicPartition, _PartitionLedger] = {}
        self.fates: dict[Fate, int] = dict.fromkeys(Fate, 0)
        self.stale_results = 0
        self.max_metadata_bytes = max_metadata_bytes
        self.map_overflows = 0  # commits whose map of final offsets did not fit whole
        self.maps_dropped = 0  # maps not trusted: reading started below their base

    def assign(self, tp: TopicPartition, generation: int, committed: Commit | None = None) -> None:
        """Own `tp`; `committed` is the group's last commit, whose map marks offsets to skip."""
        ledger = _PartitionLedger(generation)
        if committed is not None and committed.offset >= 0:
            ledger.final_before = decode_final_offsets(committed.metadata, committed.offset)
            ledger.map_base = committed.offset
        self._partitions[tp] = ledger

    def is_final_already(self, coords: Coordinates) -> bool:
        """True when an earlier owner finished this offset (read from the commit's map).

        Asked in consumed order. The map describes the log as it was when committed, and
        reading starts at its base when that is still the same log. Reading that starts
        anywhere else means the group's offset was reset: below the base, the topic was
        recreated or its log cut back (issue 23, defect 3); above it, retention deleted the
        committed offset, perhaps of a log recreated since (the simulation's seed 985). The
        offsets it marks may then hold other records, so it is dropped, counted in
        `maps_dropped`: those records are sent again, never skipped.
        """
        ledger = self._partitions.get(coords.topic_partition)
        if ledger is None or not ledger.final_before:
            return False
        if not ledger.is_map_checked:
            ledger.is_map_checked = True
            if coords.offset != ledger.map_base:
                ledger.final_before = set()
                self.maps_dropped += 1
                return False
        return coords.offset in ledger.final_before

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
        ledger.final_before.discard(coords.offset)

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
        if left == 1:
            if ledger.pending[0] == coords.offset:
                self._advance(ledger)
            else:
                ledger.marks_version += 1
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

    def commits(self, skip: Collection[TopicPartition] = ()) -> dict[TopicPartition, Commit]:
        """What to commit where the prefix or the map of final offsets past it changed.

        `skip` names partitions whose last commit is still unanswered: they are left as they
        are, so the answer marks exactly what that commit carried.

        The map marks only offsets whose fate is final; when it does not fit the metadata limit,
        it marks a prefix of them (counted in `map_overflows`): the rest are simply re-processed.
        """
        out = {}
        for tp, ledger in self._partitions.items():
            if _is_current(ledger) or tp in skip:
                continue
            base = ledger.committable
            if base is None:
                if not ledger.pending:
                    continue
                base = ledger.pending[0]  # where this assignment started: moves nothing
            remaining = ledger.remaining
            final = [o for o in ledger.pending if remaining[o] == 0]
            if ledger.final_before:  # marks of an earlier owner not reached yet: keep them
                final = sorted([*final, *ledger.final_before])
            metadata, is_whole = encode_final_offsets(final, base, self.max_metadata_bytes)
            self.map_overflows += not is_whole
            ledger.offered_version = ledger.marks_version
            if (base, metadata) == (ledger.committed, ledger.committed_metadata):
                ledger.committed_version = ledger.offered_version
            else:
                out[tp] = Commit(base, metadata)
        return out

    def uncommitted(self) -> int:
        """Partitions whose prefix or map of final offsets moved since their last commit."""
        return sum(1 for ledger in self._partitions.values() if not _is_current(ledger))

    def mark_committed(self, commits: dict[TopicPartition, Commit]) -> None:
        for tp, commit in commits.items():
            if (ledger := self._partitions.get(tp)) is not None:
                ledger.committed = commit.offset
                ledger.committed_metadata = commit.metadata
                ledger.committed_version = ledger.offered_version

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
