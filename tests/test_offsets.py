from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.records import Coordinates, Fate
from consumer.stages.offsetmap import decode_final_offsets
from consumer.stages.offsets import LedgerError, OffsetLedger

TP = ("orders", 0)


def at(offset: int) -> Coordinates:
    return Coordinates("orders", 0, offset)


def offsets_after(start: int, gaps: list[int]) -> list[int]:
    """Increasing offsets with the given gaps (transaction markers and compaction leave holes)."""
    offsets, offset = [], start
    for gap in gaps:
        offset += gap
        offsets.append(offset)
    return offsets


def ledger_with(offsets: list[int]) -> OffsetLedger:
    ledger = OffsetLedger()
    ledger.assign(TP, 1)
    for offset in offsets:
        ledger.track(at(offset), 1)
    return ledger


def test_ledger_finish_out_of_order_commits_prefix_only() -> None:
    ledger = ledger_with([10, 11, 12])
    ledger.finish(at(12), 1, Fate.DELIVERED)
    ledger.finish(at(11), 1, Fate.DUPLICATE)
    assert ledger.committable() == {}
    ledger.finish(at(10), 1, Fate.DEAD_LETTERED)
    assert ledger.committable() == {TP: 13}


def test_ledger_sparse_offsets_commit_last_finished_plus_one() -> None:
    ledger = ledger_with([3, 7, 20])  # gaps: transaction markers, compaction
    ledger.finish(at(3), 1, Fate.DELIVERED)
    ledger.finish(at(7), 1, Fate.SKIPPED)
    assert ledger.committable() == {TP: 8}


def test_ledger_fan_out_finishes_with_last_event() -> None:
    ledger = OffsetLedger()
    ledger.assign(TP, 1)
    ledger.track(at(0), 1, events=2)
    ledger.finish(at(0), 1, Fate.DELIVERED)
    assert ledger.committable() == {}
    ledger.finish(at(0), 1, Fate.DELIVERED)
    assert ledger.committable() == {TP: 1}


def test_ledger_mark_committed_hides_unchanged_offsets() -> None:
    ledger = ledger_with([0])
    ledger.finish(at(0), 1, Fate.DELIVERED)
    ledger.mark_committed(ledger.commits())
    assert ledger.committable() == {}
    assert ledger.commits() == {}


def test_ledger_commit_carries_map_of_final_offsets_past_the_prefix() -> None:
    ledger = ledger_with([10, 11, 12, 14, 15])
    ledger.finish(at(10), 1, Fate.DELIVERED)
    ledger.finish(at(12), 1, Fate.DELIVERED)
    ledger.finish(at(15), 1, Fate.DUPLICATE)
    commit = ledger.commits()[TP]
    assert commit.offset == 11
    assert decode_final_offsets(commit.metadata, commit.offset) == {12, 15}


def test_ledger_map_before_any_prefix_commits_the_start_offset() -> None:
    ledger = ledger_with([10, 11])
    ledger.finish(at(11), 1, Fate.DELIVERED)
    commit = ledger.commits()[TP]
    assert commit.offset == 10  # where the assignment started: moves nothing back or forward
    assert decode_final_offsets(commit.metadata, 10) == {11}


def test_ledger_failed_commit_is_offered_again_and_new_marks_too() -> None:
    ledger = ledger_with([0, 1, 2, 3])
    ledger.finish(at(2), 1, Fate.DELIVERED)
    first = ledger.commits()
    assert first  # the commit fails: mark_committed is not called
    assert ledger.commits() == first
    ledger.mark_committed(first)
    assert ledger.commits() == {}
    ledger.finish(at(3), 1, Fate.DELIVERED)  # only the map changes, not the prefix
    assert decode_final_offsets(ledger.commits()[TP].metadata, 0) == {2, 3}


def test_ledger_new_owner_skips_offsets_the_commit_marks() -> None:
    old = ledger_with([5, 6, 7, 8])
    for offset in (5, 7, 8):
        old.finish(at(offset), 1, Fate.DELIVERED)
    commit = old.commits()[TP]
    new = OffsetLedger()
    new.assign(TP, 1, commit)
    # reading starts at the committed offset (6), asked in consumed order
    assert [o for o in range(6, 10) if new.is_final_already(at(o))] == [7, 8]
    new.track(at(6), 1)
    new.track(at(7), 1)
    assert new.is_final_already(at(8)) and not new.is_final_already(at(7))


def test_ledger_map_is_dropped_when_reading_starts_below_its_base() -> None:
    """Issue 23, defect 3: the log truncated or the topic recreated, the offset reset to the
    earliest: the offsets the map marks may now hold new records, never to be skipped."""
    old = ledger_with([5, 6, 7, 8])
    for offset in (5, 7, 8):
        old.finish(at(offset), 1, Fate.DELIVERED)
    new = OffsetLedger()
    new.assign(TP, 1, old.commits()[TP])
    assert [o for o in range(0, 10) if new.is_final_already(at(o))] == []
    assert new.maps_dropped == 1


def test_ledger_map_is_dropped_when_reading_starts_above_its_base() -> None:
    """Retention deleted the committed offset (of a topic recreated since, perhaps: seed 985
    of the simulation skipped a new record at an offset the old log's map marked final)."""
    old = ledger_with([5, 6, 7, 8])
    for offset in (5, 7, 8):
        old.finish(at(offset), 1, Fate.DELIVERED)
    new = OffsetLedger()
    new.assign(TP, 1, old.commits()[TP])  # base 6, 7 and 8 marked
    assert [o for o in range(7, 10) if new.is_final_already(at(o))] == []
    assert new.maps_dropped == 1


def test_ledger_new_owner_keeps_the_marks_it_has_not_reached_in_its_own_commits() -> None:
    old = ledger_with([5, 6, 7, 8, 9])
    for offset in (7, 8, 9):
        old.finish(at(offset), 1, Fate.DELIVERED)
    new = OffsetLedger()
    new.assign(TP, 1, old.commits()[TP])
    new.track(at(5), 1)
    new.finish(at(5), 1, Fate.DELIVERED)  # it commits before it has read 7, 8 and 9 again
    commit = new.commits()[TP]
    assert commit.offset == 6
    assert decode_final_offsets(commit.metadata, 6) == {7, 8, 9}  # a crash now loses no mark


def test_ledger_map_that_does_not_fit_marks_a_prefix_and_counts() -> None:
    ledger = OffsetLedger(max_metadata_bytes=40)
    ledger.assign(TP, 1)
    offsets = list(range(0, 400, 3))
    for offset in offsets:
        ledger.track(at(offset), 1)
    for offset in offsets[1:]:
        ledger.finish(at(offset), 1, Fate.DELIVERED)
    commit = ledger.commits()[TP]
    marked = decode_final_offsets(commit.metadata, commit.offset)
    assert len(commit.metadata) <= 40 and ledger.map_overflows == 1
    assert marked and marked < set(offsets[1:])
    assert marked == set(sorted(offsets[1:])[: len(marked)])  # the first ones, no gaps


def test_ledger_broken_invariants_raise() -> None:
    ledger = ledger_with([5])
    with pytest.raises(LedgerError):
        ledger.track(at(5), 1)
    with pytest.raises(LedgerError):
        ledger.finish(at(6), 1, Fate.DELIVERED)
    ledger.finish(at(5), 1, Fate.DELIVERED)
    with pytest.raises(LedgerError):
        ledger.finish(at(5), 1, Fate.DELIVERED)
    with pytest.raises(LedgerError):
        ledger.track(Coordinates("other", 0, 1), 1)


def test_ledger_results_for_revoked_or_older_generation_are_ignored() -> None:
    ledger = ledger_with([0, 1])
    ledger.revoke(TP)
    assert ledger.finish(at(0), 1, Fate.DELIVERED) is False
    ledger.assign(TP, 2)
    ledger.track(at(0), 2)
    assert ledger.finish(at(0), 1, Fate.DELIVERED) is False
    assert ledger.unfinished(TP) == 1
    assert ledger.finish(at(0), 2, Fate.DELIVERED) is True
    assert ledger.stale_results == 2


@given(
    st.lists(st.integers(1, 5), min_size=1, max_size=60),
    st.randoms(use_true_random=False),
    st.integers(0, 60),
)
def test_ledger_any_finish_order_never_commits_past_unfinished(
    gaps: list[int],
    rng: object,
    finished_count: int,
) -> None:
    import random

    assert isinstance(rng, random.Random)
    offsets = offsets_after(0, gaps)
    ledger = ledger_with(offsets)
    order = offsets[:]
    rng.shuffle(order)
    finished: set[int] = set()
    for done in order[:finished_count]:
        ledger.finish(at(done), 1, Fate.DELIVERED)
        finished.add(done)
        committed = ledger.committable().get(TP)
        if committed is not None:
            # every offset below the commit point is finished ...
            assert all(o in finished for o in offsets if o < committed)
            # ... and the commit point is just past a finished offset
            assert committed - 1 in finished
        unfinished = [o for o in offsets if o not in finished]
        if unfinished:
            assert committed is None or committed <= min(unfinished)
    if finished_count >= len(offsets):
        assert ledger.committable() == {TP: offsets[-1] + 1}
        assert ledger.unfinished() == 0


@given(
    st.lists(st.integers(1, 4), min_size=1, max_size=80),
    st.randoms(use_true_random=False),
    st.integers(0, 80),
    st.sampled_from([40, 200, 4000]),
)
def test_ledger_map_never_marks_an_offset_that_is_not_final(
    gaps: list[int], rng: object, finished_count: int, max_bytes: int
) -> None:
    import random

    assert isinstance(rng, random.Random)
    offsets = offsets_after(100, gaps)
    ledger = OffsetLedger(max_metadata_bytes=max_bytes)
    ledger.assign(TP, 1)
    for o in offsets:
        ledger.track(at(o), 1)
    order = offsets[:]
    rng.shuffle(order)
    finished: set[int] = set()
    for done in order[:finished_count]:
        ledger.finish(at(done), 1, Fate.DELIVERED)
        finished.add(done)
        for commit in ledger.commits().values():
            assert len(commit.metadata) <= max_bytes
            assert all(o in finished for o in offsets if o < commit.offset)
            marked = decode_final_offsets(commit.metadata, commit.offset)
            assert marked <= finished
            if max_bytes == 4000:
                assert marked == {o for o in finished if o > commit.offset}
