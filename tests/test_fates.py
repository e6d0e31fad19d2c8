from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from consumer.engine.fates import ALREADY_FINAL, Fates
from consumer.observability import telemetry as tm
from consumer.records import Batch, BatchResult, Conversion, EventOutcome
from consumer.stages.deadletter import DeadLetter
from consumer.stages.dedup import MemoryDedupStore, key_of
from consumer.stages.offsets import OffsetLedger
from tests.conftest import ConversionFactory, EnvelopeFactory


class Rig:
    def __init__(self, dlq_max_run: int = 0) -> None:
        self.ledger = OffsetLedger()
        self.ledger.assign(("orders", 0), 0)
        self.dedup = MemoryDedupStore(3600, 1000)
        self.letters: list[DeadLetter] = []
        self.released: list[int] = []
        self.tasks: list[Coroutine[Any, Any, None]] = []
        self.sent: list[Conversion] = []
        telemetry = tm.setup_telemetry([InMemoryMetricReader()])
        self.fates = Fates(
            self.ledger,
            self.dedup,
            telemetry.instruments,
            self.letters.append,
            self.released.append,
            self.tasks.append,
            dlq_max_run,
            self.sent.append,
        )

    async def settle(self) -> None:
        for task in self.tasks:
            await task
        self.tasks.clear()


def answered(conversions: list[Conversion], *statuses: str) -> BatchResult:
    batch = Batch(conversions[0].ad_account, tuple(conversions), (b"{}",) * len(conversions))
    outcomes = tuple(
        EventOutcome("processed")
        if s == "processed"
        else EventOutcome("failed", "pinterest.event_failed", "bad")
        for s in statuses
    )
    return BatchResult(batch, outcomes, "rid-1")


def test_skip_and_duplicate_are_final_at_once(envelope_factory: EnvelopeFactory) -> None:
    rig = Rig()
    first, second = envelope_factory(offset=0), envelope_factory(offset=1)
    for envelope in (first, second):
        rig.ledger.track(envelope.coords, 0)
    rig.fates.skipped(first, ALREADY_FINAL)
    rig.fates.duplicate(second)
    assert rig.ledger.committable() == {("orders", 0): 2}
    assert rig.fates.counts == {"skipped": 1, "already_final": 1, "deduplicated": 1}


async def test_answers_confirm_delivered_and_release_failed_claims(
    conversion_factory: ConversionFactory,
) -> None:
    rig = Rig()
    good, bad = conversion_factory(offset=0), conversion_factory(offset=1)
    for conversion in (good, bad):
        rig.ledger.track(conversion.coords, 0)
    assert await rig.dedup.claim_many([key_of(good), key_of(bad)]) == [True, True]
    rig.fates.answered(answered([good, bad], "processed", "failed"))
    await rig.settle()
    # Delivered is final now; the failed one only once its dead letter is acknowledged.
    assert rig.ledger.committable() == {("orders", 0): 1}
    assert [letter.reason for letter in rig.letters] == ["pinterest.event_failed"]
    assert rig.letters[0].request_id == "rid-1"
    assert rig.released == [2]
    # The delivered event_id stays claimed; the failed one may be sent again by a replay.
    assert await rig.dedup.claim_many([key_of(good), key_of(bad)]) == [False, True]
    rig.fates.dead_lettered(rig.letters[0])
    assert rig.ledger.committable() == {("orders", 0): 2}
    assert rig.fates.counts["delivered"] == 1 and rig.fates.counts["dead_lettered"] == 1


def test_dead_letter_ceiling_halts_and_any_other_fate_resets_the_run(
    envelope_factory: EnvelopeFactory,
) -> None:
    rig = Rig(dlq_max_run=3)
    envelopes = [envelope_factory(offset=n) for n in range(6)]
    for envelope in envelopes:
        rig.ledger.track(envelope.coords, 0)
    rig.fates.failed(DeadLetter(envelopes[0], "decode.bad_avro", "x"))
    rig.fates.failed(DeadLetter(envelopes[1], "decode.bad_avro", "x"))
    rig.fates.skipped(envelopes[2], "filter.test_order")
    rig.fates.failed(DeadLetter(envelopes[3], "decode.bad_avro", "x"))
    rig.fates.failed(DeadLetter(envelopes[4], "decode.bad_avro", "x"))
    assert rig.fates.halt_reason is None
    rig.fates.failed(DeadLetter(envelopes[5], "decode.bad_avro", "x"))
    assert rig.fates.halt_reason is not None and "CAPI_DLQ_MAX_RUN=3" in rig.fates.halt_reason


async def test_wait_for_progress_returns_when_a_fate_is_final(
    envelope_factory: EnvelopeFactory,
) -> None:
    rig = Rig()
    envelope = envelope_factory(offset=0)
    rig.ledger.track(envelope.coords, 0)
    waiter = asyncio.create_task(rig.fates.wait_for_progress(30.0))
    await asyncio.sleep(0)
    assert not waiter.done()
    rig.fates.duplicate(envelope)
    await asyncio.wait_for(waiter, 5.0)


def test_release_claims_without_keys_spawns_nothing() -> None:
    rig = Rig()
    rig.fates.release_claims([])
    assert rig.tasks == []


def two_copies(factory: ConversionFactory) -> tuple[Rig, Conversion, Conversion]:
    """Two consumed records carrying one event (offsets 0 and 1), both tracked."""
    rig = Rig()
    first = factory(offset=0, event_id="order-1")
    again = factory(offset=1, event_id="order-1")
    for conversion in (first, again):
        rig.ledger.track(conversion.coords, 0)
    return rig, first, again


async def test_duplicate_of_an_event_in_flight_is_final_only_once_that_copy_is_delivered(
    conversion_factory: ConversionFactory,
) -> None:
    """Issue 23, defect 2: the copy was committed as a duplicate before any copy was delivered."""
    rig, first, again = two_copies(conversion_factory)
    rig.fates.send(first)
    assert rig.fates.is_in_flight(again)
    rig.fates.duplicate_of_in_flight(again)
    assert rig.ledger.committable() == {}  # neither is final yet
    rig.fates.answered(answered([first], "processed"))
    await rig.settle()
    assert rig.ledger.committable() == {("orders", 0): 2}
    assert rig.fates.counts["deduplicated"] == 1 and not rig.fates.is_in_flight(again)


async def test_duplicate_of_an_event_in_flight_is_sent_when_that_copy_fails(
    conversion_factory: ConversionFactory,
) -> None:
    rig, first, again = two_copies(conversion_factory)
    assert await rig.dedup.claim_many([key_of(first)]) == [True]
    rig.fates.send(first)
    rig.fates.duplicate_of_in_flight(again)
    rig.fates.answered(answered([first], "failed"))
    await rig.settle()
    assert rig.sent == [first, again]  # the waiting copy goes out in its place
    assert rig.fates.is_in_flight(again)
    assert await rig.dedup.claim_many([key_of(again)]) == [False]  # the claim passed to it


async def test_abandoned_event_is_not_final_and_lets_its_claim_or_a_waiting_copy_go(
    conversion_factory: ConversionFactory,
) -> None:
    """Its partition went to another member: no dead letter, no fate here; the claim is
    released (the new owner claims it), or passes to a copy waiting in another partition."""
    rig, first, again = two_copies(conversion_factory)
    alone = conversion_factory(offset=2, event_id="order-2")
    rig.ledger.track(alone.coords, 0)
    assert await rig.dedup.claim_many([key_of(first), key_of(alone)]) == [True, True]
    rig.fates.send(first)
    rig.fates.send(alone)
    rig.fates.duplicate_of_in_flight(again)
    abandoned = EventOutcome("abandoned", "offset.partition_gone")
    batch = Batch(first.ad_account, (first, alone), (b"{}", b"{}"))
    rig.fates.answered(BatchResult(batch, (abandoned, abandoned), "rid-1"))
    await rig.settle()
    assert rig.letters == [] and rig.ledger.committable() == {}
    assert rig.sent == [first, alone, again]  # the waiting copy is sent in its place
    assert await rig.dedup.claim_many([key_of(alone)]) == [True]  # released
    assert rig.fates.counts["abandoned"] == 2 and rig.released == [2]
