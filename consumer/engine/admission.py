"""Admission: a consumed chunk is built (`process.py`), its event_ids claimed (dedup), and its
records handed on in order — skips, duplicates, failures and events to `fates.py`, which sends
events to the batcher — until the batcher or the dead-letter writer is full or the pipeline halted.

This is the one backpressure mechanism: `handle` returns how many records it accepted and the
source holds the rest, pauses and offers them again. Records built but not accepted stay here,
built and claimed, so a retry neither rebuilds them nor claims their event_id twice; `forget`
releases them when their partitions go away.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, NamedTuple

from opentelemetry import trace

from consumer.conversion.quality import MatchQuality
from consumer.engine.fates import ALREADY_FINAL, Fates
from consumer.engine.process import Built, RecordProcessor
from consumer.observability import telemetry as tm
from consumer.records import Conversion, Coordinates, Envelope, Skip, TopicPartition
from consumer.stages.contract import HoldingStage
from consumer.stages.deadletter import DeadLetter
from consumer.stages.dedup import DedupKey, DedupStore, key_of
from consumer.stages.offsets import OffsetLedger


class _Prepared(NamedTuple):
    """One consumed record, built into its events (one, or the rule's `also` beside it), with
    whether each event's id is claimed for us (set in place as claims are granted)."""

    envelope: Envelope
    events: tuple[Built, ...]
    claims: list[bool]


class Admission:
    def __init__(
        self,
        processor: RecordProcessor,
        dedup: DedupStore | None,
        ledger: OffsetLedger,
        fates: Fates,
        quality: MatchQuality,
        downstream: Sequence[HoldingStage[Any]],
    ) -> None:
        """`downstream`: the stages records go on to; while any is full, none is accepted."""
        self.processor = processor
        self.dedup = dedup
        self.ledger = ledger
        self.fates = fates
        self.quality = quality
        self._downstream = tuple(downstream)
        self._tracer = processor.tracer or trace.NoOpTracer()
        self._unaccepted: dict[Coordinates, _Prepared] = {}

    def _is_accepting(self) -> bool:
        if self.fates.halt_reason is not None:
            return False
        for stage in self._downstream:  # noqa: SIM110 (asked per record: no generator)
            if stage.is_full:
                return False
        return True

    async def handle(self, envelopes: list[Envelope]) -> int:
        """Take a consumed chunk; returns how many were accepted (the rest are held and retried).

        Raises `TransientError` (registry or Redis down) before anything was accepted.
        """
        if not self._is_accepting():
            return 0  # hold the chunk without building it on every turn
        with self._tracer.start_as_current_span(
            tm.SPAN_PROCESS_CHUNK,
            kind=trace.SpanKind.CONSUMER,
            attributes={
                tm.ATTR_MESSAGING_SYSTEM: "kafka",
                tm.ATTR_MESSAGING_OPERATION: "process",
                tm.ATTR_BATCH_COUNT: len(envelopes),
                tm.ATTR_CONSUMER_GROUP: self.processor.group_id,
            },
        ):
            prepared = await self._prepare(envelopes)
        return self._admit(prepared)

    async def _prepare(self, envelopes: list[Envelope]) -> list[_Prepared]:
        """Build and claim each record, or take what an earlier turn built for it."""
        unaccepted = self._unaccepted
        held = [
            p if (p := unaccepted.get(e.coords)) and p.envelope.generation == e.generation else None
            for e in envelopes
        ]
        # Offsets an earlier owner finished (the commit's map) are not decoded or sent again.
        is_final_already = self.ledger.is_final_already
        finals = [
            p is None and is_final_already(e.coords) for e, p in zip(envelopes, held, strict=True)
        ]
        decoder = self.processor.decoder
        assert decoder is not None
        await decoder.prepare(
            [e for e, p, final in zip(envelopes, held, finals, strict=True) if not (p or final)]
        )
        now_s = int(time.time())
        build = self.processor.build
        prepared: list[_Prepared] = []
        # Claims are asked in consumed order, so the earliest copy of an event gets it. That
        # includes copies held since an earlier turn that found their event_id taken then: the
        # first copy may have failed since and its claim gone, so they ask again rather than
        # be dropped as duplicates of an event never delivered.
        asking: list[tuple[list[bool], int]] = []  # (the record's claims, the event's place)
        keys: list[DedupKey] = []
        for envelope, p, final in zip(envelopes, held, finals, strict=True):
            if p is None:
                result = Skip(envelope.coords, ALREADY_FINAL) if final else build(envelope, now_s)
                events = result.events() if isinstance(result, Conversion) else (result,)
                # Kept before any claim is asked: a retry after a failed claim (Redis away)
                # neither rebuilds it nor claims its event_id twice.
                p = unaccepted[envelope.coords] = _Prepared(envelope, events, [False] * len(events))
            prepared.append(p)
            for i, event in enumerate(p.events):
                if not p.claims[i] and isinstance(event, Conversion):
                    asking.append((p.claims, i))
                    keys.append(key_of(event))
        claims = await self.dedup.claim_many(keys) if self.dedup is not None else [True] * len(keys)
        for (record_claims, i), is_claimed in zip(asking, claims, strict=True):
            if is_claimed:
                record_claims[i] = True
        return prepared

    def _admit(self, prepared: list[_Prepared]) -> int:
        """Hand records on in order until a stage is full; the rest stay built for next time."""
        fates, accepted = self.fates, 0
        for envelope, events, claims in prepared:
            if not self._is_accepting():
                break
            del self._unaccepted[envelope.coords]
            # Final once every event it made is (delivered, duplicate, dead-lettered).
            self.ledger.track(envelope.coords, envelope.generation, len(events))
            accepted += 1
            for result, is_claimed in zip(events, claims, strict=True):
                if isinstance(result, Conversion):
                    if is_claimed:
                        self.quality.observe(
                            result.ad_account,
                            result.event_name,
                            result.event["user_data"],
                            result.dropped,
                        )
                        fates.send(result)
                    elif fates.is_in_flight(result):
                        fates.duplicate_of_in_flight(result)
                    else:
                        fates.duplicate(envelope)
                elif isinstance(result, Skip):
                    fates.skipped(envelope, result.reason)
                else:
                    fates.failed(DeadLetter(envelope, result.reason, result.detail))
        fates.consumed([p.envelope for p in prepared[:accepted]])
        return accepted

    def forget(self, partitions: set[TopicPartition] | None) -> None:
        """Drop records built but never accepted (revoked, lost, shutting down): their
        event_id claims are released, so whoever consumes them next may send them."""
        gone = [
            coords
            for coords in self._unaccepted
            if partitions is None or coords.topic_partition in partitions
        ]
        claims: list[DedupKey] = []
        for coords in gone:
            prepared = self._unaccepted.pop(coords)
            for event, is_claimed in zip(prepared.events, prepared.claims, strict=True):
                if is_claimed and isinstance(event, Conversion):
                    claims.append(key_of(event))
        self.fates.release_claims(claims)
