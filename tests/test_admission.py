from __future__ import annotations

import time
from pathlib import Path

import yaml
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from consumer.conversion.quality import MatchQuality
from consumer.conversion.rules import compile_mapping
from consumer.engine.admission import Admission
from consumer.engine.fates import Fates
from consumer.engine.process import RecordProcessor
from consumer.observability import telemetry as tm
from consumer.records import (
    Batch,
    BatchResult,
    Conversion,
    Coordinates,
    Decoded,
    Envelope,
    EventOutcome,
)
from consumer.stages.deadletter import DeadLetter
from consumer.stages.decode import Decoder
from consumer.stages.dedup import MemoryDedupStore, key_of
from consumer.stages.offsets import OffsetLedger
from tests.conftest import placed_order

ROOT = Path(__file__).resolve().parent.parent
MAPPING = compile_mapping(yaml.safe_load((ROOT / "schemas" / "mapping.example.yaml").read_text()))
TOPIC, TP = "shop.orders", ("shop.orders", 0)


class OrderDecoder(Decoder):
    """The envelope's value is the order id; b"bad" fails to decode."""

    def __init__(self) -> None:
        super().__init__(None, {}, {})
        self.decoded = 0

    def decode(self, envelope: Envelope) -> Decoded:
        self.decoded += 1
        if envelope.value == b"bad":
            raise ValueError("not Avro")
        record = placed_order(int(time.time()), order_id=envelope.value.decode())
        return Decoded(envelope, record, "com.example.shop.orders.OrderEvent")


def example_with_also() -> dict[str, object]:
    """The example mapping whose order rule also sends a custom event for orders whose id ends
    in "-big"."""
    document = yaml.safe_load((ROOT / "schemas" / "mapping.example.yaml").read_text())
    document["topics"][0]["also"] = [
        {
            "event_name": "big_order",
            "event_id": "{order_id}-custom",
            "when": {"field": "order_id", "matches": "-big$"},
        }
    ]
    return dict(document)


class Rig:
    def __init__(self, mapping: dict[str, object] | None = None) -> None:
        self.ledger = OffsetLedger()
        self.ledger.assign(TP, 1)
        self.dedup = MemoryDedupStore(3600, 1000)
        self.letters: list[DeadLetter] = []
        self.sent: list[Conversion] = []
        self.is_full = False
        self.full_after: int | None = None  # the batcher fills after this many events
        self.processor = RecordProcessor(MAPPING if mapping is None else compile_mapping(mapping))
        self.decoder = self.processor.decoder = OrderDecoder()
        telemetry = tm.setup_telemetry([InMemoryMetricReader()])
        self.fates = Fates(
            self.ledger,
            self.dedup,
            telemetry.instruments,
            self.letters.append,
            lambda _: None,
            lambda coroutine: coroutine.close(),
            submit_event=self._submit,
        )
        self.admission = Admission(
            self.processor,
            self.dedup,
            self.ledger,
            self.fates,
            MatchQuality(),
            [self],  # the stage records go on to (the batcher): full when the test says
        )

    # The `HoldingStage` the records go on to; `is_full` is the attribute above.
    def submit(self, item: Conversion) -> None:
        self._submit(item)

    async def drain(self, deadline_s: float) -> bool:
        return True

    async def close(self) -> None:
        return None

    def _submit(self, conversion: Conversion) -> None:
        self.sent.append(conversion)
        if self.full_after is not None and len(self.sent) >= self.full_after:
            self.is_full = True


def answer(conversions: list[Conversion], outcome: EventOutcome) -> BatchResult:
    """Pinterest's same answer for each of these events, in one request."""
    batch = Batch(conversions[0].ad_account, tuple(conversions), (b"{}",) * len(conversions))
    return BatchResult(batch, (outcome,) * len(conversions), "rid")


def delivered(conversions: list[Conversion]) -> BatchResult:
    return answer(conversions, EventOutcome("processed"))


def envelopes(*order_ids: str, start: int = 0) -> list[Envelope]:
    return [
        Envelope(Coordinates(TOPIC, 0, start + i), value=o.encode(), generation=1)
        for i, o in enumerate(order_ids)
    ]


async def test_admission_hands_records_on_in_order_until_full_and_keeps_the_rest_built() -> None:
    rig = Rig()
    chunk = envelopes("o-1", "o-2", "o-3")
    rig.full_after = 1
    assert await rig.admission.handle(chunk) == 1
    assert [c.event_id for c in rig.sent] == ["o-1"]
    rig.is_full, rig.full_after = False, None
    assert await rig.admission.handle(chunk[1:]) == 2
    assert rig.decoder.decoded == 3  # the held records were not decoded again
    assert [c.event_id for c in rig.sent] == ["o-1", "o-2", "o-3"]
    assert rig.ledger.unfinished(TP) == 3


async def test_admission_full_before_anything_accepts_nothing_and_builds_nothing() -> None:
    rig = Rig()
    rig.is_full = True
    assert await rig.admission.handle(envelopes("o-1")) == 0
    assert rig.decoder.decoded == 0 and rig.ledger.unfinished(TP) == 0


async def test_admission_a_record_that_fails_to_build_is_dead_lettered_not_raised() -> None:
    rig = Rig()
    assert await rig.admission.handle(envelopes("o-1", "bad", "o-3")) == 3
    assert [letter.reason for letter in rig.letters] == ["internal.ValueError"]
    assert [c.event_id for c in rig.sent] == ["o-1", "o-3"]


async def test_admission_forget_releases_the_claims_of_records_never_accepted() -> None:
    rig = Rig()
    rig.full_after = 1
    two = envelopes("o-1", "o-2")
    assert await rig.admission.handle(two) == 1  # o-2 built and claimed, then held
    rig.admission.forget({TP})  # its partition revoked
    rig.ledger.revoke(TP)
    rig.ledger.assign(TP, 2)
    rig.is_full, rig.full_after = False, None
    next_owner = [Envelope(e.coords, e.value, generation=2) for e in two[1:]]
    assert await rig.admission.handle(next_owner) == 1
    assert [c.event_id for c in rig.sent] == ["o-1", "o-2"]  # its claim was released: sent


async def test_admission_copy_of_an_event_in_flight_waits_for_its_answer() -> None:
    rig = Rig()
    assert await rig.admission.handle(envelopes("o-1", "o-1")) == 2
    assert [c.coords.offset for c in rig.sent] == [0]
    assert rig.ledger.commits() == {}  # the copy is not final while o-1 is in flight
    assert rig.fates.counts["deduplicated"] == 0


async def test_admission_claims_go_in_consumed_order_held_copies_first() -> None:
    """A held copy and a fresh copy of one event: the earlier (held) one must get the claim,
    else it is dropped as a duplicate of a copy that is not even sent yet."""
    rig = Rig()
    assert await rig.admission.handle(envelopes("o-1")) == 1  # offset 0, out for delivery
    rig.full_after = 2
    chunk = envelopes("o-2", "o-1", start=1)
    assert await rig.admission.handle(chunk) == 1  # o-1 at 2: built, claim taken, held
    first = rig.sent[0]
    rig.fates.answered(
        BatchResult(
            Batch(first.ad_account, (first,), (b"{}",)),
            (EventOutcome("failed", "pinterest.event_failed", "bad"),),
            "rid",
        )
    )  # the first copy failed: its claim is released
    rig.is_full, rig.full_after = False, None
    assert await rig.admission.handle([chunk[1], *envelopes("o-1", start=3)]) == 2
    assert [c.coords.offset for c in rig.sent] == [0, 1, 2]  # the held copy went out
    assert rig.fates.counts["deduplicated"] == 0  # the fresh one waits for it


async def test_admission_a_record_with_two_events_is_final_only_when_both_are() -> None:
    rig = Rig(example_with_also())
    assert await rig.admission.handle(envelopes("o-1", "o-2-big")) == 2
    assert [(c.event_name, c.event_id) for c in rig.sent] == [
        ("checkout", "o-1"),
        ("checkout", "o-2-big"),
        ("big_order", "o-2-big-custom"),
    ]
    checkout, big = rig.sent[1], rig.sent[2]
    assert big.event["user_data"] is checkout.event["user_data"]  # hashed once per record
    assert big.envelope is checkout.envelope
    rig.fates.answered(delivered(rig.sent[:2]))
    assert rig.ledger.committable() == {TP: 1}  # o-2-big waits for its second event
    rig.fates.answered(delivered(rig.sent[2:]))
    assert rig.ledger.committable() == {TP: 2}


async def test_admission_one_event_of_a_record_refused_dead_letters_that_event_alone() -> None:
    rig = Rig(example_with_also())
    assert await rig.admission.handle(envelopes("o-2-big")) == 1
    checkout, big = rig.sent
    rig.fates.answered(delivered([checkout]))
    rig.fates.answered(answer([big], EventOutcome("failed", "api.invalid", "no")))
    assert [letter.reason for letter in rig.letters] == ["api.invalid"]
    assert rig.ledger.committable() == {}  # final once the dead letter is written
    rig.fates.dead_lettered(rig.letters[0])
    assert rig.ledger.committable() == {TP: 1}


async def test_admission_claims_each_event_of_a_record_and_forget_releases_them_all() -> None:
    rig = Rig(example_with_also())
    rig.full_after = 1
    assert await rig.admission.handle(envelopes("o-1", "o-2-big")) == 1
    assert await rig.dedup.claim_many([key_of(c) for c in rig.sent]) == [False]
    rig.admission.forget({TP})
    rig.ledger.revoke(TP)
    rig.ledger.assign(TP, 2)
    rig.is_full, rig.full_after = False, None
    again = [Envelope(Coordinates(TOPIC, 0, 1), b"o-2-big", generation=2)]
    assert await rig.admission.handle(again) == 1
    assert [c.event_id for c in rig.sent[1:]] == ["o-2-big", "o-2-big-custom"]
