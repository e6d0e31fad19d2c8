"""Every record's fate, recorded once: skipped, duplicate, delivered, failed, dead-lettered.

Each fate moves the offset ledger, the dedup store (confirm on delivery, release on failure), the
counters and the dead-letter ceiling together, so no path can forget one of them. Failures are
handed to the dead-letter writer; its acknowledgement is the fate that lets the offset advance.
Change what happens after a 422's per-event answer, or when the pipeline halts on dead letters,
here; what the answer means is `answers.classify`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

from consumer.observability import telemetry as tm
from consumer.records import BatchResult, Conversion, Envelope, Fate
from consumer.stages.deadletter import DeadLetter
from consumer.stages.dedup import DedupKey, DedupStore, fingerprint_of, key_of
from consumer.stages.offsets import OffsetLedger

logger = logging.getLogger(__name__)
ALREADY_FINAL = "offset.already_final"  # skipped: marked final in the last commit's map
COUNTS = (
    "consumed",
    "delivered",
    "deduplicated",
    "skipped",
    "already_final",
    "failed",
    "dead_lettered",
    "abandoned",
)


class Fates:
    def __init__(
        self,
        ledger: OffsetLedger,
        dedup: DedupStore | None,
        metrics: tm.Instruments,
        write_dead_letter: Callable[[DeadLetter], None],
        release_pending: Callable[[int], None],
        spawn: Callable[[Coroutine[Any, Any, None]], None],
        dlq_max_run: int = 0,
        submit_event: Callable[[Conversion], None] = lambda _: None,
    ) -> None:
        self._ledger = ledger
        self._dedup = dedup
        self._metrics = metrics
        self._write_dead_letter = write_dead_letter
        self._release_pending = release_pending
        self._spawn = spawn
        self._submit_event = submit_event
        # Events handed to the batcher and not answered yet, each with the duplicates that
        # arrived meanwhile: they wait for its answer (see `duplicate_of_in_flight`).
        self._in_flight: dict[int, list[Conversion]] = {}
        self._dlq_max_run = dlq_max_run
        self._dlq_run = 0
        self.counts: Counter[str] = Counter()
        self.halt_reason: str | None = None  # set when the dead-letter ceiling is reached
        self._progress = asyncio.Event()  # set whenever an offset's fate became final

    async def wait_for_progress(self, timeout_s: float) -> None:
        """Until some offset's fate became final since the last call, or `timeout_s`."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._progress.wait(), timeout_s)
        self._progress.clear()

    def consumed(self, envelopes: list[Envelope]) -> None:
        """Count records accepted (the ledger tracked each one as it was accepted)."""
        for topic, count in Counter(e.coords.topic for e in envelopes).items():
            self._metrics.consumed.add(count, {"topic": topic})
        self.counts["consumed"] += len(envelopes)

    def skipped(self, envelope: Envelope, reason: str) -> None:
        self.counts["skipped"] += 1
        if reason == ALREADY_FINAL:
            self.counts["already_final"] += 1
        self._metrics.skipped.add(1, {"reason": reason})
        self._finish(envelope, Fate.SKIPPED)

    def send(self, conversion: Conversion) -> None:
        """Hand an event to the batcher; its answer comes back through `answered`."""
        self._in_flight.setdefault(fingerprint_of(conversion), [])
        self._submit_event(conversion)

    def is_in_flight(self, conversion: Conversion) -> bool:
        return fingerprint_of(conversion) in self._in_flight

    def duplicate_of_in_flight(self, conversion: Conversion) -> None:
        """A copy of an event whose first copy is out for delivery: final only with its answer.

        Dropped at once, it would be committed before any copy was delivered, and lost if the
        first send is then abandoned (a shutdown, a halted account, a revoke in between: issue
        23, defect 2). Delivered: this one is a duplicate. Failed or given up: this one is sent.
        """
        self._in_flight[fingerprint_of(conversion)].append(conversion)

    def duplicate(self, envelope: Envelope) -> None:
        self.counts["deduplicated"] += 1
        self._metrics.deduplicated.add(1)
        self._finish(envelope, Fate.DUPLICATE)

    def failed(self, letter: DeadLetter) -> None:
        """Final only once the dead-letter write is acknowledged (`dead_lettered`)."""
        self.counts["failed"] += 1
        self._metrics.failed.add(1, {"reason": letter.reason})
        self._write_dead_letter(letter)
        self._dlq_run += 1
        limit = self._dlq_max_run
        if limit and self._dlq_run >= limit and self.halt_reason is None:
            self.halt_reason = f"{self._dlq_run} dead letters in a row (CAPI_DLQ_MAX_RUN={limit})"
            logger.error("halted: dead-letter ceiling reached", extra={"reason": self.halt_reason})

    def dead_lettered(self, letter: DeadLetter) -> None:
        self.counts["dead_lettered"] += 1
        self._metrics.dead_lettered.add(1, {"reason": letter.reason})
        self._ledger.finish(letter.envelope.coords, letter.envelope.generation, Fate.DEAD_LETTERED)
        self._progress.set()

    def answered(self, result: BatchResult) -> None:
        """Pinterest's per-event answers for one request."""
        now_wall, now_mono = time.time(), time.monotonic()
        batch = result.batch
        delivered: list[DedupKey] = []
        failed: list[DedupKey] = []
        per_event_name = Counter[str]()
        if any(o.status != "abandoned" for o in result.outcomes):  # Pinterest answered these
            oldest_event_s = min(c.event_time_s for c in batch.conversions)
            self._metrics.event_to_ack_s.record(max(0.0, now_wall - oldest_event_s))
        warnings = 0
        oldest_consumed_s = now_mono
        finish, in_flight = self._ledger.finish, self._in_flight
        for conversion, outcome in zip(batch.conversions, result.outcomes, strict=True):
            envelope = conversion.envelope
            key = key_of(conversion)
            if outcome.status == "processed":
                for waiting in in_flight.pop(key.fingerprint, ()):
                    self.duplicate(waiting.envelope)
                delivered.append(key)
                per_event_name[conversion.event_name] += 1
                if outcome.message:
                    warnings += 1
                if envelope.consumed_at_s < oldest_consumed_s:
                    oldest_consumed_s = envelope.consumed_at_s
                # `_finish`, inline (the progress event is set once, below)
                finish(envelope.coords, envelope.generation, Fate.DELIVERED)
                self._dlq_run = 0
            elif outcome.status == "abandoned":  # its partition's new owner sends it
                self.counts["abandoned"] += 1
                if not self._hand_over(key):
                    failed.append(key)
            else:
                if not self._hand_over(key):
                    failed.append(key)
                self.failed(
                    DeadLetter(
                        envelope,
                        outcome.reason,
                        outcome.message,
                        result.request_id,
                        event=(conversion.event_name, conversion.event_id),
                    )
                )
        if delivered:  # one measurement per request: per event it cost 4 % of all CPU
            self._progress.set()
            self._metrics.consume_to_ack_s.record(max(0.0, now_mono - oldest_consumed_s))
        if warnings:
            self._metrics.warnings.add(warnings, {"ad_account": batch.ad_account})
        for event_name, count in per_event_name.items():
            self._metrics.delivered.add(
                count, {"ad_account": batch.ad_account, "event_name": event_name}
            )
        self.counts["delivered"] += len(delivered)
        self._release_pending(len(batch))
        if self._dedup is not None:
            if delivered:
                self._spawn(self._dedup.confirm_many(delivered))
            if failed:
                self._dedup.release_many(failed)

    def _hand_over(self, key: DedupKey) -> bool:
        """The first copy will not be delivered: send the next waiting copy in its place (the
        claim passes to it). False when none waits (the caller releases the claim)."""
        waiting = self._in_flight.get(key.fingerprint)
        if not waiting:
            self._in_flight.pop(key.fingerprint, None)
            return False
        self._submit_event(waiting.pop(0))
        return True

    def release_claims(self, keys: list[DedupKey]) -> None:
        """Claims taken for events that will not be sent by us after all (revoked, shut down)."""
        if keys and self._dedup is not None:
            self._dedup.release_many(keys)

    def _finish(self, envelope: Envelope, fate: Fate) -> None:
        self._ledger.finish(envelope.coords, envelope.generation, fate)
        self._dlq_run = 0
        self._progress.set()
