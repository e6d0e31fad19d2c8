from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from consumer.stages.offsetmap import decode_final_offsets, encode_final_offsets


def test_offsetmap_nothing_to_mark_is_empty_metadata() -> None:
    assert encode_final_offsets([], 10) == ("", True)
    assert decode_final_offsets("", 10) == set()
    assert decode_final_offsets(None, 10) == set()


def test_offsetmap_dense_marks_choose_runs_sparse_marks_choose_bits() -> None:
    dense, _ = encode_final_offsets(list(range(101, 5001)), 100)
    assert dense.startswith("capi1:100:r") and len(dense) < 20
    sparse, _ = encode_final_offsets(list(range(101, 2000, 2)), 100)
    assert sparse.startswith("capi1:100:b")


def test_offsetmap_foreign_or_damaged_or_moved_metadata_marks_nothing() -> None:
    text, _ = encode_final_offsets([12, 13], 10)
    assert decode_final_offsets(text, 10) == {12, 13}
    assert decode_final_offsets(text, 11) == set()  # offsets were reset since
    for damaged in ("hello", "capi1:10", "capi1:x:r", "capi1:10:r!!!", "capi1:10:zAA", "capi1:"):
        assert decode_final_offsets(damaged, 10) == set()


def test_offsetmap_refuses_a_map_claiming_absurdly_many_offsets() -> None:
    from consumer.stages.offsetmap import _b64, _varints

    # two runs: 1 not final, then 2**40 final: a forged or corrupt map must not eat memory
    assert decode_final_offsets("capi1:0:r" + _b64(_varints([1, 2**40])), 0) == set()
    assert decode_final_offsets("capi1:0:r" + _b64(_varints([1, 3])), 0) == {1, 2, 3}


@given(
    st.sets(st.integers(1, 100_000), max_size=300),
    st.integers(0, 10**12),
    st.integers(30, 4000),
)
def test_offsetmap_round_trip_marks_a_prefix_of_the_final_offsets_within_the_limit(
    relative: set[int], base: int, max_bytes: int
) -> None:
    final = sorted(base + r for r in relative)
    text, is_whole = encode_final_offsets(final, base, max_bytes)
    assert len(text) <= max_bytes
    decoded = decode_final_offsets(text, base)
    assert decoded == set(final[: len(decoded)])
    if is_whole:
        assert decoded == set(final)
