from __future__ import annotations

import asyncio
import tracemalloc
from typing import Any

import orjson
import pytest

from consumer.records import Batch
from consumer.stages.batcher import Batcher, BatchSettings
from tests.conftest import ConversionFactory, eventually


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make_batcher(**settings: Any) -> tuple[Batcher, list[Batch], FakeClock]:
    batches: list[Batch] = []
    clock = FakeClock()
    batcher = Batcher(batches.append, BatchSettings(**settings), clock=clock)
    return batcher, batches, clock


def test_batcher_closes_at_max_events_per_account(conversion_factory: ConversionFactory) -> None:
    batcher, batches, _ = make_batcher(max_events=3)
    for offset in range(7):
        batcher.submit(conversion_factory(offset=offset, ad_account="1"))
    batcher.submit(conversion_factory(offset=7, ad_account="2"))
    assert [len(b) for b in batches] == [3, 3]
    assert {b.ad_account for b in batches} == {"1"}
    assert batcher.open_events == 2


def test_batcher_body_is_the_exact_api_shape(conversion_factory: ConversionFactory) -> None:
    batcher, batches, _ = make_batcher(max_events=2)
    conversions = [conversion_factory(offset=i) for i in range(2)]
    events = [c.event for c in conversions]
    for conversion in conversions:
        batcher.submit(conversion)
    body = orjson.loads(batches[0].body)
    assert body == {"data": events}
    assert all(c.event == {} for c in conversions)  # the batch holds the bytes, not the dicts
    assert [c.coords for c in batches[0].conversions] == [c.coords for c in conversions]


def test_batcher_closes_before_byte_cap(conversion_factory: ConversionFactory) -> None:
    one = len(orjson.dumps(conversion_factory().event))
    batcher, batches, _ = make_batcher(max_bytes=one * 2 + 20)
    for offset in range(3):
        batcher.submit(conversion_factory(offset=offset))
    assert [len(b) for b in batches] == [2]
    assert all(len(b.body) <= one * 2 + 20 for b in batches)


def test_batcher_linger_starts_at_first_event(conversion_factory: ConversionFactory) -> None:
    batcher, batches, clock = make_batcher(linger_s=0.5)
    batcher.submit(conversion_factory(offset=0))
    clock.now += 0.4
    batcher.submit(conversion_factory(offset=1))
    assert batcher.close_due() == pytest.approx(100.5)
    clock.now += 0.1
    assert batcher.close_due() is None
    assert [len(b) for b in batches] == [2]


def test_batcher_backpressure_hysteresis(conversion_factory: ConversionFactory) -> None:
    batcher, _, _ = make_batcher(high_watermark=4, low_watermark=2, max_events=10)
    for offset in range(4):
        assert not batcher.is_full
        batcher.submit(conversion_factory(offset=offset))
    assert batcher.is_full
    batcher.release(1)
    assert batcher.is_full
    batcher.release(2)
    assert not batcher.is_full


async def test_batcher_run_closes_lingering_batch(conversion_factory: ConversionFactory) -> None:
    batches: list[Batch] = []
    batcher = Batcher(batches.append, BatchSettings(linger_s=0.05))
    task = asyncio.create_task(batcher.run())
    batcher.submit(conversion_factory())
    await eventually(lambda: batches, what="the lingering batch")
    task.cancel()
    assert [len(b) for b in batches] == [1]


def test_batcher_keeps_exact_size_event_bytes(conversion_factory: ConversionFactory) -> None:
    batcher, batches, _ = make_batcher(max_events=1)
    conversion = conversion_factory()
    encoded = orjson.dumps(conversion.event)
    tracemalloc.start()
    try:
        batcher.submit(conversion)
        kept = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert batches[0].encoded == (encoded,)
    assert kept < 4 * len(encoded)  # orjson's own bytes keep its growth buffer (16 KB and more)
