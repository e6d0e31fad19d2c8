"""The dry run's delivery: each request body printed as one JSON line instead of being sent."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import orjson

from consumer.records import AdAccountId, Batch, BatchResult, EventOutcome
from consumer.stages.delivery import DeliverySettings


class DryRunDelivery:
    """Prints each request body as one JSON line instead of sending it; every event 'processed'."""

    def __init__(
        self,
        settings: DeliverySettings,
        on_result: Callable[[BatchResult], None],
        write: Callable[[str], None],
    ) -> None:
        self.settings = settings
        self._on_result = on_result
        self._write = write
        self.halted: dict[AdAccountId, str] = {}
        self.in_flight_events = 0
        self.last_success_s: float | None = None

    @property
    def is_full(self) -> bool:
        """Never: the batcher's watermark counts the events in delivery too."""
        return False

    def submit(self, batch: Batch) -> None:
        url = f"{self.settings.base_url}/v5/ad_accounts/{batch.ad_account}/events"
        line = b'{"url":' + orjson.dumps(url) + b',"body":' + batch.body + b"}"
        self._write(line.decode())
        outcomes = (EventOutcome("processed"),) * len(batch)
        asyncio.get_running_loop().call_soon(
            self._on_result, BatchResult(batch, outcomes, "dry-run")
        )

    async def drain(self, deadline_s: float) -> bool:
        await asyncio.sleep(0)
        return True

    async def close(self) -> None:
        return None
