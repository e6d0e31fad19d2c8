"""Per-ad-account micro-batches: a batch closes at `max_events`, `max_bytes` or `linger_s`.

Each event is encoded once with orjson on submit; a closed `Batch` carries those bytes, so retry
buffers hold bytes rather than dicts. `submit` never blocks; `is_full` holds from the moment
pending events (open + in delivery) reach the high watermark until they fall below the low, and
the pipeline accepts no more records meanwhile (a `contract.HoldingStage`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from consumer.records import AdAccountId, Batch, Conversion

# {"data":[ ... ]} around the comma-joined events.
_ENVELOPE_BYTES = len(b'{"data":[]}')


@dataclass(frozen=True, slots=True)
class BatchSettings:
    max_events: int = 1000  # the API's limit per request
    max_bytes: int = 4 * 1024 * 1024
    linger_s: float = 0.2
    high_watermark: int = 50_000
    low_watermark: int = 25_000


class _OpenBatch:
    __slots__ = ("conversions", "deadline_s", "encoded", "nbytes", "opened_at_s")

    def __init__(self, now_s: float, linger_s: float) -> None:
        self.conversions: list[Conversion] = []
        self.encoded: list[bytes] = []
        self.nbytes = _ENVELOPE_BYTES
        self.opened_at_s = now_s
        self.deadline_s = now_s + linger_s


class Batcher:
    def __init__(
        self,
        on_batch: Callable[[Batch], None],
        settings: BatchSettings = BatchSettings(),
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._on_batch = on_batch
        self.max_events = settings.max_events
        self.max_bytes = settings.max_bytes
        self.linger_s = settings.linger_s
        self.high_watermark = settings.high_watermark
        self.low_watermark = settings.low_watermark
        self._clock = clock = (
            clock or time.monotonic
        )  # read at construction (the simulation patches it)
        self._open: dict[AdAccountId, _OpenBatch] = {}
        self._opened = asyncio.Event()
        self.pending = 0
        self.is_full = False

    def submit(self, conversion: Conversion) -> None:
        """Add one event to its account's batch, which takes its encoded bytes and empties
        `conversion.event`. Never blocks; check `is_full` first."""
        # Built records arrive encoded (`process.encode_event`); the event dict (3.5 KB an
        # order) is let go, since up to `high_watermark` events wait through an outage.
        encoded = conversion.encoded or bytes(memoryview(orjson.dumps(conversion.event)))
        conversion.event = {}
        conversion.encoded = b""
        batch = self._open.get(conversion.ad_account)
        if batch is not None and batch.nbytes + len(encoded) + 1 > self.max_bytes:
            self._close(conversion.ad_account)
            batch = None
        if batch is None:
            batch = self._open[conversion.ad_account] = _OpenBatch(self._clock(), self.linger_s)
            self._opened.set()
        batch.conversions.append(conversion)
        batch.encoded.append(encoded)
        batch.nbytes += len(encoded) + 1
        self.pending += 1
        if self.pending >= self.high_watermark:
            self.is_full = True
        if len(batch.conversions) >= self.max_events:
            self._close(conversion.ad_account)

    def release(self, events: int) -> None:
        """`events` reached a final fate; may lift backpressure under the low watermark."""
        self.pending -= events
        if self.is_full and self.pending < self.low_watermark:
            self.is_full = False

    def _close(self, ad_account: AdAccountId) -> None:
        batch = self._open.pop(ad_account)
        self._on_batch(
            Batch(ad_account, tuple(batch.conversions), tuple(batch.encoded), batch.opened_at_s)
        )

    def flush(self) -> None:
        """Close every open batch now (revoke, shutdown)."""
        for ad_account in list(self._open):
            self._close(ad_account)

    async def drain(self, deadline_s: float) -> bool:
        """Hand every open batch to delivery now: the batcher then holds nothing."""
        self.flush()
        return True

    async def close(self) -> None:
        """Nothing to let go of: open batches were flushed by `drain`, or are abandoned."""
        self._open.clear()

    def close_due(self) -> float | None:
        """Close batches whose linger ran out; return the next deadline, if any batch is open."""
        now = self._clock()
        for ad_account, batch in list(self._open.items()):
            if batch.deadline_s <= now:
                self._close(ad_account)
        return min((b.deadline_s for b in self._open.values()), default=None)

    async def run(self) -> None:
        """Linger timer: closes batches when their first event has waited `linger_s`.

        All batches share one linger, so the oldest open batch always has the next deadline.
        """
        while True:
            next_deadline = self.close_due()
            if next_deadline is None:
                self._opened.clear()
                await self._opened.wait()
            else:
                await asyncio.sleep(max(0.0, next_deadline - self._clock()))

    @property
    def open_events(self) -> int:
        return sum(len(b.conversions) for b in self._open.values())
