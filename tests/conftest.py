"""Shared fixtures: real services (session-scoped, loopback only) and record factories."""

from __future__ import annotations

import datetime as dt
import faulthandler
import gc
import random
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from consumer.records import (
    AdAccountId,
    Conversion,
    Coordinates,
    Envelope,
    EventId,
)
from devenv.kafka import KafkaBroker
from devenv.redis import RedisServer
from devenv.registry import SchemaRegistry
from devenv.samples import order_record

# pytest captures fd 2, so a crash in native code (librdkafka) would leave no trace: write the
# Python stacks of every thread to a file that `make test` prints when the run fails.
FAULT_LOG = Path(__file__).resolve().parent.parent / ".pytest-faults.log"
faulthandler.enable(FAULT_LOG.open("w"), all_threads=True)

# A precaution (confluent-kafka-python issue 1761, pull request 2129): admin results arrive as
# Python callbacks on a librdkafka thread, and a cyclic collection there that reclaims a client
# would destroy it from its own thread. So no automatic collection in the test process; the
# young generations are collected on the main thread after every test, all of them after every
# 50th (a full collection after each would triple the unit suite's time). The crash that clean
# clones actually hit is another one, avoided in devenv.kafka.group_reader.
gc.disable()


_TESTS_RUN = [0]


@pytest.fixture(autouse=True)
def collect_garbage_on_the_main_thread() -> Iterator[None]:
    yield
    _TESTS_RUN[0] += 1
    gc.collect(2 if _TESTS_RUN[0] % 50 == 0 else 1)


@pytest.fixture(scope="session")
def kafka() -> Iterator[KafkaBroker]:
    broker = KafkaBroker().start()
    yield broker
    broker.cleanup()


@pytest.fixture(scope="session")
def registry() -> Iterator[SchemaRegistry]:
    server = SchemaRegistry().start()
    yield server
    server.cleanup()


@pytest.fixture
def topic_name() -> Callable[[str], str]:
    def make(prefix: str = "t") -> str:
        return f"{prefix}-{uuid.uuid4().hex[:10]}"

    return make


EnvelopeFactory = Callable[..., Envelope]
ConversionFactory = Callable[..., Conversion]


@pytest.fixture
def envelope_factory() -> EnvelopeFactory:
    def make(
        topic: str = "orders",
        partition: int = 0,
        offset: int = 0,
        value: bytes = b"",
        **kwargs: Any,
    ) -> Envelope:
        return Envelope(Coordinates(topic, partition, offset), value=value, **kwargs)

    return make


def valid_event(
    event_id: str = "order-1", event_time: int = 1_700_000_000, **overrides: Any
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_name": "checkout",
        "action_source": "web",
        "event_time": event_time,
        "event_id": event_id,
        "user_data": {"em": ["973dfe463ec85785f5f95af5ba3906eedb2d931c24e69824a89ea65dba4e813b"]},
        "custom_data": {"value": "72.39", "currency": "USD"},
    }
    event.update(overrides)
    return event


@pytest.fixture
def conversion_factory(envelope_factory: EnvelopeFactory) -> ConversionFactory:
    def make(
        offset: int = 0,
        partition: int = 0,
        topic: str = "orders",
        ad_account: str = "111",
        event_id: str | None = None,
        event_time_s: int = 1_700_000_000,
        **overrides: Any,
    ) -> Conversion:
        envelope = envelope_factory(topic, partition, offset, value=b"raw")
        event_id = event_id or f"order-{partition}-{offset}"
        return Conversion(
            coords=envelope.coords,
            ad_account=AdAccountId(ad_account),
            event_id=EventId(event_id),
            event_time_s=event_time_s,
            event_name="checkout",
            event=valid_event(event_id, event_time_s, **overrides),
            envelope=envelope,
        )

    return make


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.cleanup()


async def eventually(
    predicate: Callable[[], object], timeout_s: float = 10.0, what: str = "condition"
) -> None:
    """Wait on the event loop until `predicate()` is truthy; fail naming `what` at the deadline."""
    import asyncio
    import time

    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


def placed_order(now_s: int, **changes: Any) -> dict[str, Any]:
    """A decoded order the example mapping turns into a checkout event a minute before now_s."""
    record = order_record(random.Random(3), 42, now_s * 1000)
    record.update(event_type="ORDER_PLACED", is_test=False, store_id="store-us", channel="WEB")
    record["consent"] = {"ads_personalization": True, "limited_data_processing": False}
    record["occurred_at"] = dt.datetime.fromtimestamp(now_s - 60, dt.UTC)
    record.update(changes)
    return record


SANDBOX_TOKEN = "tok"


@pytest.fixture
async def api() -> AsyncIterator[tuple[Any, str, Any]]:
    """The sandbox over loopback (token `SANDBOX_TOKEN` for account 123): it, its URL and a
    client session."""
    import aiohttp

    from consumer.tools.sandbox import Sandbox, serve
    from devenv.procs import free_port

    sandbox = Sandbox({SANDBOX_TOKEN: {"123"}})
    port = free_port()
    runner = await serve(sandbox, "127.0.0.1", port)
    async with aiohttp.ClientSession() as session:
        yield sandbox, f"http://127.0.0.1:{port}", session
    await runner.cleanup()
