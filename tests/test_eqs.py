"""Pinterest's event quality score (issue 25 part 6): read against the sandbox over loopback."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from consumer.observability import telemetry as tm
from consumer.records import Secret
from consumer.stages.eqs import EqsPoller, EqsSettings, Score, parse_scores
from tests.test_sandbox import TOKEN, fresh, post


def test_parse_scores_takes_the_documented_shape_and_leaves_out_the_rest() -> None:
    payload = [
        {
            "ingestion_source": "CONVERSIONS_API",
            "lookback_period": "14d",
            "overall_status": "FAIR",
            "source_platform": "WEB",
            "quality_components": {
                "hashed_email": {"checkout": {"coverage": 62.5, "issues": []}},
                "ip_address": {"checkout": {"coverage": "n/a"}},  # not a number: left out
            },
        },
        {"overall_status": None},  # no status: left out
        "not an object",
    ]
    assert parse_scores(payload) == {
        ("WEB", "CONVERSIONS_API"): Score("FAIR", {("hashed_email", "checkout"): 0.625})
    }
    assert parse_scores({"code": 2}) == {}


async def test_poller_reads_the_sandboxs_score_and_exports_it_beside_ours(api: Any) -> None:
    _, url, session = api
    with_email = [fresh(f"e{i}") for i in range(3)]
    without = fresh("x", user_data={"client_ip_address": "10.0.0.1", "client_user_agent": "UA"})
    status, _ = await post(api, {"data": [*with_email, without]})
    assert status == 200
    poller = EqsPoller(session, EqsSettings(url, Secret(TOKEN)), lambda: ["123"])
    assert await poller.poll("123") == 200
    assert poller.worst() == {"123": "NEEDS_IMPROVEMENT"} or poller.worst() == {"123": "FAIR"}
    gauges = poller.gauges()
    current = [
        labels["status"] for name, value, labels in gauges if name == tm.M_EQS_STATUS and value
    ]
    assert current == [poller.worst()["123"]]
    coverage = {
        (labels["component"], labels["event_type"]): value
        for name, value, labels in gauges
        if name == tm.M_EQS_COVERAGE
    }
    assert coverage[("hashed_email", "checkout")] == 0.75  # 3 of the 4 events carry an email
    assert coverage[("external_event_id", "checkout")] == 1.0


async def test_poller_keeps_the_last_score_and_backs_off_on_429(api: Any) -> None:
    sandbox, url, session = api
    await post(api, {"data": [fresh("e1")]})
    poller = EqsPoller(
        session, EqsSettings(url, Secret(TOKEN), interval_s=0.01), lambda: ["123"],
        random.Random(1),
    )  # fmt: skip
    assert await poller.poll("123") == 200 and poller.worst() == {"123": "GOOD"}
    sandbox.faults.update({"eqs_status": 429})
    assert await poller.poll("123") == 429
    assert poller.worst() == {"123": "GOOD"}  # the last answer stays
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await poller.run(idle_s=0)
    assert poller.interval_s > 0.01  # doubled on each throttled round


async def test_a_token_without_access_is_refused_and_logged_once(
    api: Any, caplog: pytest.LogCaptureFixture
) -> None:
    _, url, session = api
    poller = EqsPoller(session, EqsSettings(url, Secret("wrong")), lambda: ["123"])
    assert await poller.poll("123") == 401
    assert await poller.poll("123") == 401
    assert poller.worst() == {} and poller.last_error == "HTTP 401"
    assert [r.message for r in caplog.records].count(
        "could not read Pinterest's event quality score"
    ) == 1
