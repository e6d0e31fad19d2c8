"""A local stand-in for the Pinterest Conversions API: strict validation, real response shapes.

Used by the tests, the demo and `consumer sandbox`. Not on the data path. Faults can be set at
start or at run time through POST /_sandbox/faults; what was accepted is at GET /_sandbox/stats.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
from aiohttp import web

from consumer.conversion.capi import (
    MAX_EVENT_AGE_S,
    MAX_EVENTS_PER_REQUEST,
    InvalidEvent,
    validate_event,
)
from consumer.conversion.userdata import USER_FIELDS
from consumer.records import is_ad_account_id


@dataclass(slots=True)
class Faults:
    error_rate: float = 0.0  # fraction of requests answered with error_status
    error_status: int = 429
    latency_ms: float = 0.0
    fail_event_ids: set[str] = field(default_factory=set)  # answered "failed" per event
    outage: bool = False  # every request gets 503
    auth_failure: bool = False  # every request gets 401
    retry_after_s: float | None = None
    eqs_status: int = 0  # when set, GET conversion_eqs answers this status

    def update(self, changes: dict[str, Any]) -> None:
        for key, value in changes.items():
            if key not in {f.name for f in dataclasses.fields(self)}:
                raise KeyError(key)
            setattr(self, key, set(value) if key == "fail_event_ids" else value)


@dataclass(slots=True)
class Stats:
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    events_received: int = 0
    events_processed: int = 0
    events_failed: int = 0
    duplicates_received: int = 0
    max_concurrency: int = 0
    concurrency: int = 0
    client_ports: set[int] = field(default_factory=set)  # one per TCP connection seen
    # ad account → event id → when the first answer accepting it was sent (wall clock, s)
    event_ids: dict[str, dict[str, float]] = field(default_factory=dict)
    # events accepted again: (ad account, event id, first answered at, accepted again at)
    resends: list[tuple[str, str, float, float]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    # (ad account, event name) → events processed, and → each EQS component they carried
    per_event_name: Counter[tuple[str, str]] = field(default_factory=Counter)
    components: Counter[tuple[str, str, str]] = field(default_factory=Counter)

    def as_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "statuses": {str(k): v for k, v in self.statuses.items()},
            "events_received": self.events_received,
            "events_processed": self.events_processed,
            "events_failed": self.events_failed,
            "distinct_event_ids": sum(len(ids) for ids in self.event_ids.values()),
            "duplicates_received": self.duplicates_received,
            "max_concurrency": self.max_concurrency,
            "connections": len(self.client_ports),
        }


def _drop_unknown_user_fields(event: Any) -> str | None:
    """user_data is not closed in the spec: unknown keys earn a warning, not a failure."""
    user_data = event.get("user_data") if isinstance(event, dict) else None
    if not isinstance(user_data, dict):
        return None
    unknown = sorted(k for k in user_data if k not in USER_FIELDS)
    for key in unknown:
        del user_data[key]
    return f"Unknown user_data fields ignored: {', '.join(unknown)}" if unknown else None


# Which EQS quality component an event carries, from its fields.
_EQS_USER_DATA: Final = {
    "em": "hashed_email", "hashed_maids": "hashed_maid", "client_ip_address": "ip_address",
    "client_user_agent": "user_agent", "external_id": "advertiser_external_id",
    "click_id": "click_id_epik",
}  # fmt: skip


def _eqs_components(event: dict[str, Any]) -> list[str]:
    user_data = event.get("user_data")
    user_data = user_data if isinstance(user_data, dict) else {}
    custom = event.get("custom_data")
    custom = custom if isinstance(custom, dict) else {}
    found = [c for field_, c in _EQS_USER_DATA.items() if field_ in user_data]
    found.append("external_event_id")
    if "order_id" in custom:
        found.append("order_id")
    if "value" in custom:
        found.append("order_value")
    if "content_ids" in custom or "contents" in custom:
        found.append("product_id")
    if "event_source_url" in event:
        found.append("source_url")
    return found


def _error(status: int, code: int, message: str) -> web.Response:
    return _json(status, {"code": code, "message": message})


def _json(status: int, body: Any) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(body),
        content_type="application/json",
        headers={"x-pinterest-rid": uuid.uuid4().hex[:16]},
    )


class Sandbox:
    """`tokens` maps an access token to the ad accounts it may use ("*" for any)."""

    def __init__(
        self,
        tokens: dict[str, set[str]] | None = None,
        is_strict: bool = True,
        keep_events: int = 200_000,
        seed: int | None = None,
    ) -> None:
        self.tokens = tokens if tokens is not None else {"sandbox-token": {"*"}}
        self.is_strict = is_strict
        self.keep_events = keep_events
        self.faults = Faults()
        self.stats = Stats()
        self._rng = random.Random(seed)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=32 * 1024 * 1024)
        app.router.add_post("/v5/ad_accounts/{ad_account_id}/events", self.events)
        app.router.add_get("/v5/ad_accounts/{ad_account_id}/conversion_eqs", self.quality_score)
        app.router.add_get("/_sandbox/stats", self.get_stats)
        app.router.add_get("/_sandbox/events", self.get_events)
        app.router.add_get("/_sandbox/event_ids", self.get_event_ids)
        app.router.add_get("/_sandbox/resends", self.get_resends)
        app.router.add_post("/_sandbox/faults", self.set_faults)
        app.router.add_post("/_sandbox/reset", self.reset)
        return app

    async def events(self, request: web.Request) -> web.Response:
        self.stats.requests += 1
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if peer:
            self.stats.client_ports.add(int(peer[1]))
        self.stats.concurrency += 1
        self.stats.max_concurrency = max(self.stats.max_concurrency, self.stats.concurrency)
        try:
            response = await self._events(request)
        finally:
            self.stats.concurrency -= 1
        self.stats.statuses[response.status] += 1
        return response

    def _authorize(self, request: web.Request, ad_account: str) -> web.Response | None:
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
        accounts = self.tokens.get(token)
        if self.faults.auth_failure or accounts is None:
            return _error(401, 2, "Authentication failed.")
        if "*" not in accounts and ad_account not in accounts:
            return _error(403, 29, "You are not permitted to access that resource.")
        return None

    async def _events(self, request: web.Request) -> web.Response:
        if self.faults.latency_ms:
            await asyncio.sleep(self.faults.latency_ms / 1000)
        ad_account = request.match_info["ad_account_id"]
        if not is_ad_account_id(ad_account):
            return _error(404, 4, "Ad account not found.")
        if (denied := self._authorize(request, ad_account)) is not None:
            return denied
        if self.faults.outage:
            return _error(503, 4197, "Service is ramped down.")
        if self.faults.error_rate and self._rng.random() < self.faults.error_rate:
            response = _error(
                self.faults.error_status,
                8 if self.faults.error_status == 429 else 4197,
                "Injected fault.",
            )
            if self.faults.retry_after_s is not None:
                response.headers["Retry-After"] = str(self.faults.retry_after_s)
            return response
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _error(400, 1, "Invalid JSON body.")
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(body, dict) or set(body) != {"data"} or not isinstance(data, list):
            return _error(400, 4196, 'Invalid request: body must be {"data": [...]}')
        if not 1 <= len(data) <= MAX_EVENTS_PER_REQUEST:
            return _error(
                400,
                4196,
                f"Invalid request: data must hold 1 to "
                f"{MAX_EVENTS_PER_REQUEST} events, got {len(data)}",
            )
        is_test = request.query.get("test") == "true"
        now_s = int(time.time())
        results = []
        warnings: list[str | None] = []
        for i, event in enumerate(data):
            warnings.append(_drop_unknown_user_fields(event))
            error = self._check(event, now_s) if self.is_strict else None
            if isinstance(error, InvalidEvent) and error.is_structural:
                return _error(400, 4196, f"Invalid request: data[{i}]: {error}")
            if error is None and event.get("event_id") in self.faults.fail_event_ids:
                error = InvalidEvent("Injected per-event failure.")
            results.append(error)
        events_out = []
        answered_s = time.time()
        for event, error, warning in zip(data, results, warnings, strict=True):
            if error is None:
                events_out.append(
                    {"status": "processed", "error_message": None, "warning_message": warning}
                )
                if not is_test:
                    self._record(ad_account, event, answered_s)
            else:
                events_out.append(
                    {"status": "failed", "error_message": str(error), "warning_message": None}
                )
        processed = sum(1 for e in results if e is None)
        self.stats.events_received += len(data)
        self.stats.events_failed += len(data) - processed
        answer = {
            "num_events_received": len(data),
            "num_events_processed": processed,
            "events": events_out,
        }
        if processed < len(data):
            for event in events_out:
                event["error_message"] = event["error_message"] or ""
                event["warning_message"] = event["warning_message"] or ""
            return _json(
                422, {"code": 953, "message": "Not all events were processed.", "details": answer}
            )
        return _json(200, answer)

    @staticmethod
    def _check(event: Any, now_s: int) -> InvalidEvent | None:
        try:
            validate_event(event, now_s)
        except InvalidEvent as error:
            return error
        if event["event_time"] < now_s - MAX_EVENT_AGE_S:
            return InvalidEvent("event_time is older than 7 days")
        return None

    def _record(self, ad_account: str, event: dict[str, Any], answered_s: float) -> None:
        self.stats.events_processed += 1
        name = str(event.get("event_name"))
        self.stats.per_event_name[(ad_account, name)] += 1
        for component in _eqs_components(event):
            self.stats.components[(ad_account, name, component)] += 1
        ids = self.stats.event_ids.setdefault(ad_account, {})
        event_id = str(event.get("event_id"))
        if event_id in ids:
            self.stats.duplicates_received += 1
            if len(self.stats.resends) < self.keep_events:
                self.stats.resends.append((ad_account, event_id, ids[event_id], answered_s))
        else:
            ids[event_id] = answered_s
        if len(self.stats.events) < self.keep_events:
            self.stats.events.append({"ad_account_id": ad_account, "event": event})

    async def quality_score(self, request: web.Request) -> web.Response:
        """GET conversion_eqs: the event quality score of what this sandbox processed, by
        its own rule (Pinterest does not publish one): GOOD when at least 80 % of the events
        carry an email, FAIR from 50 %, else NEEDS_IMPROVEMENT."""
        ad_account = request.match_info["ad_account_id"]
        if (denied := self._authorize(request, ad_account)) is not None:
            return denied
        lookback = request.query.get("lookback_period")
        if lookback not in ("1d", "14d"):
            return _error(400, 1, "lookback_period must be 1d or 14d")
        if self.faults.eqs_status:
            return _error(self.faults.eqs_status, 8, "Injected fault.")
        events = {n: c for (a, n), c in self.stats.per_event_name.items() if a == ad_account}
        if not events:
            return _json(200, [])
        components: dict[str, dict[str, dict[str, float]]] = {}
        for (account, name, component), count in self.stats.components.items():
            if account == ad_account:
                share = round(100 * count / events[name], 1)
                components.setdefault(component, {})[name] = {"coverage": share}
        total = sum(events.values())
        with_email = sum(by.get("coverage", 0) * events[n] / 100
                         for n, by in components.get("hashed_email", {}).items())  # fmt: skip
        share = with_email / total
        status = "GOOD" if share >= 0.8 else "FAIR" if share >= 0.5 else "NEEDS_IMPROVEMENT"
        score = {
            "ingestion_source": "CONVERSIONS_API",
            "lookback_period": lookback,
            "overall_status": status,
            "quality_components": components,
            "source_platform": "WEB",
        }
        return _json(200, [score])

    async def get_stats(self, request: web.Request) -> web.Response:
        return _json(200, self.stats.as_json())

    async def get_events(self, request: web.Request) -> web.Response:
        limit = int(request.query.get("limit", "1000"))
        return _json(200, list(itertools.islice(self.stats.events, limit)))

    async def get_event_ids(self, request: web.Request) -> web.Response:
        return _json(200, {account: sorted(ids) for account, ids in self.stats.event_ids.items()})

    async def get_resends(self, request: web.Request) -> web.Response:
        """Events accepted more than once: [account, event id, first answered, again], wall s."""
        return _json(200, self.stats.resends)

    async def set_faults(self, request: web.Request) -> web.Response:
        try:
            self.faults.update(orjson.loads(await request.read()))
        except (KeyError, orjson.JSONDecodeError, AttributeError) as exc:
            return _error(400, 1, f"unknown fault setting: {exc}")
        return _json(200, {"ok": True})

    async def reset(self, request: web.Request) -> web.Response:
        self.faults = Faults()
        self.stats = Stats()
        return _json(200, {"ok": True})


async def serve(sandbox: Sandbox, host: str = "127.0.0.1", port: int = 8089) -> web.AppRunner:
    runner = web.AppRunner(sandbox.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
