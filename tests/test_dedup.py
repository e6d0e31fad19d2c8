"""One behaviour suite run against every `DedupStore` (memory and a real Redis)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.stages.dedup import (
    DedupKey,
    DedupStore,
    FingerprintTable,
    MemoryDedupStore,
    fingerprint,
    key_of,
)
from consumer.stages.dedup_redis import RedisDedupStore
from devenv.redis import RedisServer
from tests.conftest import ConversionFactory

NOW = 1_800_000_000


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[DedupStore]:
    made: DedupStore
    if request.param == "memory":
        made = MemoryDedupStore(window_s=48 * 3600)
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        made = RedisDedupStore(
            server.url, 48 * 3600, prefix=f"t{uuid.uuid4().hex[:6]}:", wall_clock=lambda: NOW
        )
    yield made
    await made.close()


def key(
    event_id: str, account: str = "1", event_time: int = NOW, event_name: str = "checkout"
) -> DedupKey:
    return DedupKey(fingerprint(account, event_name, event_id), event_time, account, event_id)


async def test_dedup_new_key_is_claimed_once_while_in_flight(store: DedupStore) -> None:
    assert await store.claim_many([key("a"), key("a")]) == [True, False]


async def test_dedup_confirmed_key_is_seen(store: DedupStore) -> None:
    await store.claim_many([key("a")])
    await store.confirm_many([key("a")])
    assert await store.claim_many([key("a"), key("b")]) == [False, True]


async def test_dedup_released_key_can_be_claimed_again(store: DedupStore) -> None:
    await store.claim_many([key("a")])
    store.release_many([key("a")])
    assert await store.claim_many([key("a")]) == [True]


async def test_dedup_scoped_per_ad_account(store: DedupStore) -> None:
    await store.claim_many([key("a", "1")])
    await store.confirm_many([key("a", "1")])
    assert await store.claim_many([key("a", "2")]) == [True]


async def test_dedup_keys_older_than_window_are_forgotten(store: DedupStore) -> None:
    old = key("old", event_time=NOW - 49 * 3600)
    await store.claim_many([old])
    await store.confirm_many([old])
    fresh = key("fresh", event_time=NOW)
    await store.claim_many([fresh])
    await store.confirm_many([fresh])
    assert await store.claim_many([old]) == [True]


def test_memory_dedup_expires_buckets_as_event_time_advances() -> None:
    store = MemoryDedupStore(window_s=3600, buckets=4)
    first = key("x", event_time=NOW)
    assert store.claim(first)
    store.confirm(first)
    assert not store.claim(first)
    later = key("y", event_time=NOW + 2 * 3600)
    store.claim(later)
    store.confirm(later)
    assert store.claim(first)


def test_memory_dedup_size_cap_evicts_oldest_bucket() -> None:
    store = MemoryDedupStore(window_s=48 * 3600, max_keys=5000, buckets=48)
    for i in range(12_000):
        k = key(str(i), event_time=NOW + (i // 1000) * 3600)
        store.claim(k)
        store.confirm(k)
    assert len(store) <= 5000
    assert not store.claim(key("11999", event_time=NOW + 11 * 3600))


def test_fingerprint_table_grows_and_stays_compact() -> None:
    table = FingerprintTable()
    values = [fingerprint("1", "checkout", str(i)) for i in range(100_000)]
    for value in values:
        table.add(value)
    assert all(value in table for value in values)  # every key kept through each doubling
    assert not any(table.add(value) for value in values[::101])
    assert fingerprint("1", "checkout", "absent") not in table
    assert table.count == 100_000
    assert table.nbytes / table.count <= 24


def test_fingerprint_is_stable_and_nonzero() -> None:
    assert fingerprint("1", "lead", "a") == fingerprint("1", "lead", "a")
    assert fingerprint("1", "lead", "a") != fingerprint("2", "lead", "a")
    assert fingerprint("1", "lead", "a") != 0


def test_fingerprint_keys_on_the_event_name_as_pinterest_does() -> None:
    """Issue 25 part 3: a checkout and a custom first_purchase sharing an order's id are two
    events; custom names are compared case-insensitively."""
    assert fingerprint("1", "checkout", "o-1") != fingerprint("1", "first_purchase", "o-1")
    assert fingerprint("1", "First_Purchase", "o-1") == fingerprint("1", "first_purchase", "o-1")


async def test_dedup_two_events_of_one_order_are_both_sent(store: DedupStore) -> None:
    checkout, custom = key("o-1"), key("o-1", event_name="first_purchase")
    assert await store.claim_many([checkout, custom]) == [True, True]
    await store.confirm_many([checkout, custom])
    assert await store.claim_many([checkout, custom]) == [False, False]


async def test_redis_reads_the_keys_earlier_versions_wrote(redis_server: RedisServer) -> None:
    """A rolling upgrade re-sends nothing delivered before it: a key written by a version that
    keyed on account and event_id only still marks the event seen, for one window."""
    import redis.asyncio as aioredis

    from consumer.stages.dedup import legacy_fingerprint

    prefix = f"t{uuid.uuid4().hex[:6]}:"
    old = aioredis.Redis.from_url(redis_server.url)
    await old.set(f"{prefix}{legacy_fingerprint('1', 'o-9'):016x}", b"1", ex=600)
    await old.aclose()
    for reads_legacy, expected in ((True, [False, True]), (False, [True, True])):
        store = RedisDedupStore(
            redis_server.url, 3600, prefix=prefix, reads_legacy_keys=reads_legacy
        )
        assert await store.claim_many([key("o-9"), key("o-10")]) == expected
        await store.close()


StoreFactory = Callable[[], DedupStore]


def test_key_of_makes_the_key_once_and_keeps_it(
    conversion_factory: ConversionFactory,
) -> None:
    conversion = conversion_factory(ad_account="42", event_id="order-7")
    first = key_of(conversion)
    expected = fingerprint("42", conversion.event_name, "order-7")
    assert first == DedupKey(expected, conversion.event_time_s, "42", "order-7")
    assert key_of(conversion) is first is conversion.dedup_key


@settings(max_examples=200)
@given(
    st.lists(st.tuples(st.integers(1, 2**64 - 1), st.integers(0, 72 * 3600)), max_size=300),
    st.lists(st.integers(1, 2**64 - 1), max_size=50),
)
def test_is_seen_asks_every_bucket_as_their_tables_answer(
    confirmed: list[tuple[int, int]], others: list[int]
) -> None:
    store = MemoryDedupStore(window_s=48 * 3600, max_keys=10**6)
    for fp, event_time_s in confirmed:
        store.confirm(DedupKey(fp, NOW - event_time_s))
    tables = list(store._buckets.values())
    for fp in [fp for fp, _ in confirmed] + others:
        assert store.is_seen(fp) == any(fp in table for table in tables)
