from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from consumer.errors import backoff_s
from consumer.records import EventOutcome, Secret
from consumer.stages.ratelimit import RateLimiter
from tests.conftest import ConversionFactory, eventually


def test_backoff_full_jitter_stays_within_exponential_cap() -> None:
    rng = random.Random(5)
    for attempt in range(1, 12):
        for _ in range(50):
            delay = backoff_s(attempt, 0.5, 60.0, rng)
            assert 0 <= delay <= min(60.0, 0.5 * 2 ** (attempt - 1))


def test_backoff_never_sooner_than_retry_after() -> None:
    assert backoff_s(1, 0.5, 60.0, random.Random(1), retry_after_s=7.0) >= 7.0


def test_rate_limiter_token_bucket_with_fake_clock() -> None:
    now = [0.0]
    limiter = RateLimiter(rate_per_s=10, burst=2, clock=lambda: now[0])
    assert limiter.delay_s() == 0
    assert limiter.delay_s() == 0
    assert limiter.delay_s() == pytest.approx(0.1)
    now[0] += 1.0
    assert limiter.delay_s() == 0


def test_secret_never_shows_itself() -> None:
    secret = Secret("pina_TOKEN")
    assert "pina_TOKEN" not in repr(secret) and "pina_TOKEN" not in str(secret)
    assert "pina_TOKEN" not in f"{secret}"
    assert secret.reveal() == "pina_TOKEN"


def test_backoff_after_thousands_of_attempts_stays_at_the_cap() -> None:
    rng = random.Random(3)
    assert all(0 <= backoff_s(attempt, 0.5, 60.0, rng) <= 60.0 for attempt in (1100, 10**6))


async def test_delivery_task_that_dies_is_reported_not_swallowed() -> None:

    from consumer.observability.telemetry import setup_telemetry
    from consumer.records import AdAccountId, Batch
    from consumer.stages.delivery import DeliveryClient, DeliverySettings

    crashes: list[BaseException] = []
    client = DeliveryClient(
        None,  # type: ignore[arg-type]  # never reached: _deliver is replaced below
        DeliverySettings(),
        lambda a: None,
        lambda result: None,
        setup_telemetry(span_processors=[]),
        on_crash=crashes.append,
    )

    async def broken(batch: Batch) -> None:
        raise OverflowError("boom")

    client._deliver = broken  # type: ignore[method-assign]
    client.submit(Batch(AdAccountId("1"), (), ()))
    await eventually(lambda: crashes, what="the crash report")
    assert [type(e) for e in crashes] == [OverflowError]


class _Answer:
    def __init__(self, status: int, body: bytes) -> None:
        self.status = status
        self.headers = {"x-pinterest-rid": f"rid-{status}"}
        self._body = body

    async def read(self) -> bytes:
        return self._body

    async def __aenter__(self) -> _Answer:
        return self

    async def __aexit__(self, *_: object) -> None:
        return None


def _processed(ids: list[str]) -> _Answer:
    """A 200 that says every event of the request was processed."""
    events = [{"status": "processed", "error_message": "", "warning_message": ""}] * len(ids)
    body = {"num_events_received": len(ids), "num_events_processed": len(ids)}
    return _Answer(200, orjson.dumps({**body, "events": events}))


class _ScriptedSession:
    """Answers 503 first, then processes every event; keeps each request's event ids."""

    def __init__(self, on_first: Callable[[], None]) -> None:
        self.requests: list[list[str]] = []
        self._on_first = on_first

    def post(self, url: str, data: bytes, headers: dict[str, str]) -> _Answer:
        import orjson

        ids = [e["event_id"] for e in orjson.loads(data)["data"]]
        self.requests.append(ids)
        if len(self.requests) == 1:
            self._on_first()
            return _Answer(503, b'{"code": 1, "message": "busy"}')
        return _processed(ids)


async def test_events_of_a_partition_let_go_are_not_sent_again(
    conversion_factory: ConversionFactory,
) -> None:
    """Issue 23, no needless re-send: a partition revoked (after the revoke gave up waiting) or
    lost while its events were being retried; the new owner sends them, this process must not."""
    import orjson

    from consumer.observability.telemetry import setup_telemetry
    from consumer.records import AdAccountId, Batch, BatchResult
    from consumer.stages.delivery import ABANDONED, DeliveryClient, DeliverySettings

    kept, gone = conversion_factory(partition=0), conversion_factory(partition=1)
    results: list[BatchResult] = []
    lost: set[int] = set()
    # Partition 1 goes to another member while the first request is answered 503.
    session = _ScriptedSession(on_first=lambda: lost.add(1))
    client = DeliveryClient(
        session,  # type: ignore[arg-type]
        DeliverySettings(backoff_base_s=0.01, backoff_cap_s=0.01),
        lambda a: Secret("token"),
        results.append,
        setup_telemetry(span_processors=[]),
        is_wanted=lambda c: c.coords.partition not in lost,
    )
    encoded = tuple(orjson.dumps({"event_id": c.event_id}) for c in (kept, gone))
    client.submit(Batch(AdAccountId("111"), (kept, gone), encoded))
    await eventually(lambda: len(results) == 2, what="the batch's outcomes")
    assert session.requests == [[kept.event_id, gone.event_id], [kept.event_id]]
    assert [(r.batch.conversions, r.outcomes) for r in results] == [
        ((gone,), (ABANDONED,)),  # answered at once, before the retry
        ((kept,), (EventOutcome("processed"),)),
    ]
    assert client.in_flight_events == 0


class _BisectSession:
    """400 for the pair, then processes the left half; the right half waits for `release`."""

    def __init__(self) -> None:
        self.requests: list[list[str]] = []
        self.release = asyncio.Event()

    def post(self, url: str, data: bytes, headers: dict[str, str]) -> Any:
        ids = [e["event_id"] for e in orjson.loads(data)["data"]]
        self.requests.append(ids)
        return self._answer(len(self.requests), ids)

    @contextlib.asynccontextmanager
    async def _answer(self, number: int, ids: list[str]) -> Any:
        if number == 1:
            yield _Answer(400, b'{"code": 4196, "message": "invalid"}')
            return
        if number > 2:
            await self.release.wait()
        yield _processed(ids)


async def test_a_bisected_batch_reports_each_half_as_soon_as_it_is_answered(
    conversion_factory: ConversionFactory,
) -> None:
    """Issue 23, no needless re-send: the good half of a 400 used to wait for the other half's
    retries before its offsets could be committed; a crash meanwhile made it go out again."""
    from consumer.observability.telemetry import setup_telemetry
    from consumer.records import AdAccountId, Batch, BatchResult
    from consumer.stages.delivery import DeliveryClient, DeliverySettings

    left, right = conversion_factory(offset=0), conversion_factory(offset=1)
    session = _BisectSession()
    results: list[BatchResult] = []
    client = DeliveryClient(
        session,  # type: ignore[arg-type]
        DeliverySettings(),
        lambda a: Secret("token"),
        results.append,
        setup_telemetry(span_processors=[]),
    )
    encoded = tuple(orjson.dumps({"event_id": c.event_id}) for c in (left, right))
    client.submit(Batch(AdAccountId("111"), (left, right), encoded))
    await eventually(lambda: results, what="the left half's outcome")
    assert [r.batch.conversions for r in results] == [(left,)]  # the right half still waits
    session.release.set()
    await eventually(lambda: len(results) == 2, what="the right half's outcome")
    assert results[1].batch.conversions == (right,) and client.in_flight_events == 0


class _Instant:
    """Processes every request at once, counting them."""

    def __init__(self) -> None:
        self.requests = 0

    def post(self, url: str, data: bytes, headers: dict[str, str]) -> _Answer:
        self.requests += 1
        assert url.endswith("?test=true")
        return _processed([e["event_id"] for e in orjson.loads(data)["data"]])


async def test_test_mode_holds_every_account_to_the_apps_test_rate(
    conversion_factory: ConversionFactory,
) -> None:
    """Issue 25 part 5: test requests are limited per app (10/s by default), not per account."""
    import time

    from consumer.observability.telemetry import setup_telemetry
    from consumer.records import AdAccountId, Batch, BatchResult
    from consumer.stages.delivery import DeliveryClient, DeliverySettings

    results: list[BatchResult] = []
    session = _Instant()
    client = DeliveryClient(
        session,  # type: ignore[arg-type]
        DeliverySettings(is_test=True, test_rate_per_s=50.0),
        lambda a: Secret("token"),
        results.append,
        setup_telemetry(span_processors=[]),
    )
    started = time.monotonic()
    for account in range(11):  # eleven accounts, one request each: 10 waits of 1/50 s
        conversion = conversion_factory(ad_account=str(100 + account))
        client.submit(Batch(AdAccountId(str(100 + account)), (conversion,), (b'{"event_id":"e"}',)))
    await eventually(lambda: len(results) == 11, what="every request answered")
    assert time.monotonic() - started >= 0.19 and session.requests == 11
