"""DeliveryClient against the local sandbox over real loopback HTTP."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from consumer.observability.telemetry import setup_telemetry
from consumer.records import AdAccountId, Batch, BatchResult, Secret
from consumer.stages.delivery import DeliveryClient, DeliverySettings
from consumer.stages.dryrun import DryRunDelivery
from consumer.tools.sandbox import Sandbox, serve
from devenv.procs import free_port
from tests.conftest import ConversionFactory, eventually, valid_event

TOKEN = "pina_secret_TOKEN_123"
ACCOUNT = AdAccountId("549755885175")


@dataclass
class Rig:
    sandbox: Sandbox
    url: str
    session: aiohttp.ClientSession
    results: list[BatchResult] = field(default_factory=list)
    tokens: dict[str, Secret] = field(default_factory=dict)

    def client(self, **settings: Any) -> DeliveryClient:
        defaults: dict[str, Any] = {
            "backoff_base_s": 0.01,
            "backoff_cap_s": 0.05,
            "auth_retry_s": 0.05,
        }
        defaults.update(settings)
        return DeliveryClient(
            self.session,
            DeliverySettings(self.url, **defaults),
            lambda account: self.tokens.get(account, Secret(TOKEN)),
            self.results.append,
            setup_telemetry(span_processors=[]),
        )


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    sandbox = Sandbox({TOKEN: {ACCOUNT}, "other-token": {"1"}}, seed=3)
    port = free_port()
    runner: web.AppRunner = await serve(sandbox, "127.0.0.1", port)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=16))
    yield Rig(sandbox, f"http://127.0.0.1:{port}", session)
    await session.close()
    await runner.cleanup()


def batch_of(
    factory: ConversionFactory, count: int, start: int = 0, account: str = ACCOUNT, **overrides: Any
) -> Batch:
    now = int(time.time()) - 60
    conversions = tuple(
        factory(offset=start + i, ad_account=account, event_time_s=now, **overrides)
        for i in range(count)
    )
    import orjson

    return Batch(
        AdAccountId(account), conversions, tuple(orjson.dumps(c.event) for c in conversions)
    )


async def settle(client: DeliveryClient, timeout_s: float = 10.0) -> None:
    assert await client.drain(time.monotonic() + timeout_s)


async def test_delivery_1000_events_one_request_all_processed(
    rig: Rig,
    conversion_factory: ConversionFactory,
) -> None:
    client = rig.client()
    client.submit(batch_of(conversion_factory, 1000))
    await settle(client)
    assert rig.sandbox.stats.requests == 1
    assert rig.sandbox.stats.events_processed == 1000
    [result] = rig.results
    assert all(o.status == "processed" for o in result.outcomes)
    assert result.request_id


async def test_delivery_partial_422_fails_only_those_events(
    rig: Rig,
    conversion_factory: ConversionFactory,
) -> None:
    rig.sandbox.faults.fail_event_ids = {"order-0-3", "order-0-7"}
    client = rig.client()
    client.submit(batch_of(conversion_factory, 10))
    await settle(client)
    [result] = rig.results
    failed = [
        c.event_id
        for c, o in zip(result.batch.conversions, result.outcomes, strict=True)
        if o.status == "failed"
    ]
    assert failed == ["order-0-3", "order-0-7"]
    assert rig.sandbox.stats.requests == 1  # never re-sent as a whole
    assert rig.sandbox.stats.statuses[422] == 1
    assert all(
        o.reason == "pinterest.event_failed" for o in result.outcomes if o.status == "failed"
    )


async def test_delivery_400_bisects_to_isolate_bad_event(
    rig: Rig,
    conversion_factory: ConversionFactory,
) -> None:
    batch = batch_of(conversion_factory, 16)
    bad = list(batch.encoded)
    import orjson

    broken = valid_event("bad-one", int(time.time()) - 60)
    broken["custom_data"]["colour"] = "red"  # additional property: the live API answers 400
    bad[5] = orjson.dumps(broken)
    client = rig.client()
    client.submit(Batch(batch.ad_account, batch.conversions, tuple(bad)))
    await settle(client)
    # Each half is reported as soon as it is answered: one result per part of the split.
    outcomes = {
        c.coords.offset: o
        for r in rig.results
        for c, o in zip(r.batch.conversions, r.outcomes, strict=True)
    }
    assert sorted(outcomes) == [c.coords.offset for c in batch.conversions]
    failed = [offset for offset, o in outcomes.items() if o.status == "failed"]
    assert failed == [batch.conversions[5].coords.offset]
    assert outcomes[failed[0]].reason == "pinterest.invalid_event"
    assert "colour" in outcomes[failed[0]].message
    assert rig.sandbox.stats.events_processed == 15
    assert rig.sandbox.stats.requests <= 1 + 2 * 4  # log2(16) levels, two halves each


async def test_delivery_429_storm_retries_until_all_processed(
    rig: Rig,
    conversion_factory: ConversionFactory,
) -> None:
    rig.sandbox.faults.update({"error_rate": 0.5, "error_status": 429})
    client = rig.client()
    for i in range(10):
        client.submit(batch_of(conversion_factory, 5, start=i * 5))
    await settle(client)
    assert rig.sandbox.stats.events_processed == 50
    assert rig.sandbox.stats.statuses[429] > 0
    assert all(o.status == "processed" for r in rig.results for o in r.outcomes)
    assert sum(r.attempts for r in rig.results) == rig.sandbox.stats.requests


async def test_delivery_honours_retry_after(
    rig: Rig, conversion_factory: ConversionFactory
) -> None:
    rig.sandbox.faults.update({"error_rate": 1.0, "error_status": 503, "retry_after_s": 0.3})
    client = rig.client()
    started = time.monotonic()
    client.submit(batch_of(conversion_factory, 1))
    await eventually(lambda: rig.sandbox.stats.statuses[503] > 0, what="a 503 answer")
    rig.sandbox.faults.error_rate = 0.0
    await settle(client)
    assert time.monotonic() - started >= 0.3


async def test_delivery_outage_then_recovery(
    rig: Rig, conversion_factory: ConversionFactory
) -> None:
    rig.sandbox.faults.outage = True
    client = rig.client()
    client.submit(batch_of(conversion_factory, 3))
    await eventually(lambda: rig.sandbox.stats.requests >= 3, what="three refused attempts")
    assert rig.results == []
    rig.sandbox.faults.outage = False
    await settle(client)
    assert rig.sandbox.stats.events_processed == 3


async def test_delivery_401_halts_account_keeps_events_until_token_fixed(
    rig: Rig,
    conversion_factory: ConversionFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    rig.tokens[ACCOUNT] = Secret("wrong-token")
    client = rig.client()
    client.submit(batch_of(conversion_factory, 4))
    await eventually(lambda: ACCOUNT in client.halted, what="the account halted")
    assert rig.results == []
    assert "401" in client.halted[ACCOUNT]
    rig.tokens[ACCOUNT] = Secret(TOKEN)
    await settle(client)
    assert not client.halted
    assert rig.sandbox.stats.events_processed == 4
    assert all(o.status == "processed" for o in rig.results[0].outcomes)
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "wrong-token" not in logged and TOKEN not in logged
    assert "request_id" in logged


async def test_delivery_403_for_account_the_token_cannot_use(
    rig: Rig,
    conversion_factory: ConversionFactory,
) -> None:
    client = rig.client()
    client.submit(batch_of(conversion_factory, 1, account="777"))
    await eventually(lambda: AdAccountId("777") in client.halted, what="the account halted")
    assert "403" in client.halted[AdAccountId("777")]
    assert rig.results == []
    await client.close()


async def test_delivery_in_flight_limit_and_connection_reuse(
    rig: Rig,
    conversion_factory: ConversionFactory,
) -> None:
    rig.sandbox.faults.latency_ms = 50
    client = rig.client(max_in_flight_per_account=2)
    for i in range(12):
        client.submit(batch_of(conversion_factory, 2, start=i * 2))
    await settle(client)
    stats = rig.sandbox.stats.as_json()
    assert stats["requests"] == 12
    assert stats["max_concurrency"] <= 2
    assert stats["connections"] <= 2  # one keep-alive connection per in-flight slot


async def test_delivery_rate_limit_per_account(
    rig: Rig, conversion_factory: ConversionFactory
) -> None:
    client = rig.client(rate_per_minute=1200)  # 20/s, burst 20
    started = time.monotonic()
    for i in range(30):
        client.submit(batch_of(conversion_factory, 1, start=i))
    await settle(client)
    assert time.monotonic() - started >= 0.45  # 10 requests beyond the burst at 20/s


async def test_delivery_max_retry_age_gives_up_with_reason(
    rig: Rig,
    conversion_factory: ConversionFactory,
) -> None:
    rig.sandbox.faults.outage = True
    client = rig.client(max_retry_age_s=0.2)
    client.submit(batch_of(conversion_factory, 2))
    await settle(client)
    assert [o.reason for o in rig.results[0].outcomes] == ["pinterest.retry_exhausted"] * 2


async def test_delivery_test_mode_validates_but_records_nothing(
    rig: Rig,
    conversion_factory: ConversionFactory,
) -> None:
    client = rig.client(is_test=True)
    client.submit(batch_of(conversion_factory, 3))
    await settle(client)
    assert all(o.status == "processed" for o in rig.results[0].outcomes)
    assert rig.sandbox.stats.events_processed == 0


async def test_dry_run_prints_payload_instead_of_sending(
    rig: Rig,
    conversion_factory: ConversionFactory,
) -> None:
    lines: list[str] = []
    dry = DryRunDelivery(DeliverySettings(rig.url), rig.results.append, lines.append)
    dry.submit(batch_of(conversion_factory, 2))
    await eventually(lambda: lines and rig.results, what="the printed payload")
    import orjson

    printed = orjson.loads(lines[0])
    assert printed["url"].endswith(f"/v5/ad_accounts/{ACCOUNT}/events")
    assert len(printed["body"]["data"]) == 2
    assert rig.sandbox.stats.requests == 0
    assert len(rig.results) == 1


@pytest.mark.parametrize("status", [405, 409])
async def test_delivery_unexpected_4xx_halts_and_keeps_events_instead_of_retrying_forever(
    rig: Rig, conversion_factory: ConversionFactory, status: int
) -> None:
    rig.sandbox.faults.update({"error_rate": 1.0, "error_status": status})
    client = rig.client()
    client.submit(batch_of(conversion_factory, 3))
    await eventually(lambda: ACCOUNT in client.halted, what="the account halted")
    assert rig.results == [] and str(status) in client.halted[ACCOUNT]
    rig.sandbox.faults.error_rate = 0.0
    await settle(client)
    assert not client.halted
    assert [o.status for o in rig.results[0].outcomes] == ["processed"] * 3


async def test_delivery_200_without_event_answers_halts_instead_of_claiming_delivery(
    conversion_factory: ConversionFactory,
) -> None:
    async def not_the_api(request: web.Request) -> web.Response:
        return web.Response(text="<html>welcome</html>", content_type="text/html")

    app = web.Application()
    app.router.add_post("/v5/ad_accounts/{account}/events", not_the_api)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    results: list[BatchResult] = []
    async with aiohttp.ClientSession() as session:
        client = DeliveryClient(
            session,
            DeliverySettings(f"http://127.0.0.1:{port}", auth_retry_s=0.05),
            lambda account: Secret(TOKEN),
            results.append,
            setup_telemetry(span_processors=[]),
        )
        client.submit(batch_of(conversion_factory, 2))
        await eventually(lambda: ACCOUNT in client.halted, what="the account halted")
        assert results == [] and "CAPI_API_BASE_URL" in client.halted[ACCOUNT]
        await client.close()
    await runner.cleanup()
