"""The sandbox validates like the real API and answers with its response shapes."""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import orjson
import pytest

from consumer.tools.sandbox import Sandbox
from tests.conftest import SANDBOX_TOKEN, valid_event

TOKEN = SANDBOX_TOKEN
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


async def post(
    api: tuple[Sandbox, str, aiohttp.ClientSession],
    body: Any,
    account: str = "123",
    headers: dict[str, str] | None = None,
    query: str = "",
) -> tuple[int, Any]:
    _, url, session = api
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    async with session.post(
        f"{url}/v5/ad_accounts/{account}/events{query}",
        data=data,
        headers=AUTH if headers is None else headers,
    ) as response:
        assert response.headers.get("x-pinterest-rid")
        return response.status, orjson.loads(await response.read())


def fresh(event_id: str = "e1", **overrides: Any) -> dict[str, Any]:
    event_time = overrides.pop("event_time", int(time.time()) - 30)
    return valid_event(event_id, event_time, **overrides)


async def test_sandbox_accepts_valid_batch_with_real_200_shape(api: Any) -> None:
    status, body = await post(api, {"data": [fresh("a"), fresh("b")]})
    assert status == 200
    assert body == {
        "num_events_received": 2,
        "num_events_processed": 2,
        "events": [{"status": "processed", "error_message": None, "warning_message": None}] * 2,
    }
    assert api[0].stats.as_json()["distinct_event_ids"] == 2


@pytest.mark.parametrize(("body", "code"), [
    (b"{not json", 1),
    ({"data": [], }, 4196),
    ({"data": [fresh()] * 1001}, 4196),
    ({"data": [fresh()], "extra": 1}, 4196),
    ({"events": [fresh()]}, 4196),
    ({"data": [fresh(custom_data={"value": 72.39, "currency": "USD"})]}, 4196),
    ({"data": [fresh(colour="red")]}, 4196),
])  # fmt: skip
async def test_sandbox_rejects_invalid_requests_with_400(api: Any, body: Any, code: int) -> None:
    status, answer = await post(api, body)
    assert status == 400 and answer["code"] == code


@pytest.mark.parametrize(
    "bad",
    [
        {"user_data": {"em": ["test@example.com"]}},  # raw PII in a hashed field
        {"event_time": int(time.time()) - 8 * 86400},  # stale
        {"event_time": int(time.time() * 1000)},  # milliseconds
        {"user_data": {"client_ip_address": "1.2.3.4"}},  # no identifier
    ],
)
async def test_sandbox_per_event_failures_answer_422_with_details(
    api: Any, bad: dict[str, Any]
) -> None:
    status, body = await post(api, {"data": [fresh("ok"), fresh("bad", **bad)]})
    assert status == 422 and body["code"] == 953
    details = body["details"]
    assert details["num_events_processed"] == 1
    assert details["events"][0] == {
        "status": "processed",
        "error_message": "",
        "warning_message": "",
    }
    assert details["events"][1]["status"] == "failed" and details["events"][1]["error_message"]


async def test_sandbox_auth_401_and_403(api: Any) -> None:
    status, body = await post(api, {"data": [fresh()]}, headers={})
    assert (status, body["code"]) == (401, 2)
    status, body = await post(api, {"data": [fresh()]}, account="999")
    assert (status, body["code"]) == (403, 29)


async def test_sandbox_test_mode_records_nothing(api: Any) -> None:
    status, _ = await post(api, {"data": [fresh()]}, query="?test=true")
    assert status == 200
    assert api[0].stats.events_processed == 0


async def test_sandbox_faults_and_stats_admin_endpoints(api: Any) -> None:
    _, url, session = api
    async with session.post(f"{url}/_sandbox/faults", data=b'{"outage": true}') as response:
        assert response.status == 200
    status, body = await post(api, {"data": [fresh()]})
    assert (status, body["code"]) == (503, 4197)
    async with session.post(f"{url}/_sandbox/faults", data=b'{"nonsense": 1}') as response:
        assert response.status == 400
    async with session.post(f"{url}/_sandbox/reset") as response:
        assert response.status == 200
    await post(api, {"data": [fresh("x"), fresh("x")]})
    async with session.get(f"{url}/_sandbox/stats") as response:
        stats = await response.json()
    assert stats["events_processed"] == 2 and stats["duplicates_received"] == 1
    async with session.get(f"{url}/_sandbox/events?limit=1") as response:
        assert len(await response.json()) == 1


async def test_sandbox_unknown_user_data_key_is_a_warning_not_a_failure(api: Any) -> None:
    event = fresh("w", user_data={"em": ["a" * 64], "zz": ["b" * 64]})
    status, body = await post(api, {"data": [event]})
    assert status == 200
    assert body["events"][0]["status"] == "processed"
    assert "zz" in body["events"][0]["warning_message"]
