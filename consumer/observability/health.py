"""Health endpoints: /healthz (loop and source alive), /readyz (the state below, with its reason),
/metrics (Prometheus text), /stats (JSON counters for `consumer status` and the demo).

`assess` turns plain facts into one readiness state; adding a readiness condition is one row here
and its alert rule in `deploy/prometheus/alerts.yaml` (with its test in `tests/test_health.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

Check = Callable[[], tuple[bool, dict[str, Any]]]

# How long a condition lasts before it makes the consumer unready: brief blips (a broker
# restart, a registry redeploy) are not worth an operator's attention.
UNREACHABLE_GRACE_S = 15.0

# Every state /readyz can report, in the order they are checked; "ready" marks the two that are.
STATES: dict[str, bool] = {
    "dead_letter_ceiling": False,  # CAPI_DLQ_MAX_RUN dead letters in a row: a bad deploy
    "account_halted": False,  # 401/403/404 or an answer that is not the API's
    "broker_unreachable": False,  # no broker answered for UNREACHABLE_GRACE_S
    "topic_missing": False,  # a subscribed topic does not exist
    "registry_unreachable": False,  # records held: the schema registry (or Redis) is failing
    "dead_letter_failing": False,  # dead-letter writes failing (topic missing, ACL): offsets wait
    "backpressure": False,  # every partition paused for longer than CAPI_PAUSED_UNREADY_S
    "partitions_lost": False,  # lost every partition, no rebalance gave any back since
    "starting": False,  # not joined to the group yet
    "no_partitions": True,  # joined, but more replicas than partitions: ready, idle
    "consuming": True,
}


@dataclass(frozen=True, slots=True)
class ReadinessFacts:
    """What the stages know, as plain values (seconds are how long a condition has lasted)."""

    halt_reason: str | None = None
    halted_accounts: tuple[str, ...] = ()
    broker_down_s: float | None = None
    missing_topics: tuple[str, ...] = ()
    transient_failing_s: float | None = None
    transient_error: str = ""
    all_paused_s: float | None = None
    paused_unready_s: float = 300.0
    is_joined: bool = False
    assigned: int = 0
    dead_letter_failing_s: float | None = None
    dead_letter_error: str = ""
    lost_s: float | None = None  # how long every partition has been lost with none back
    lost_unready_s: float = 60.0


def assess(facts: ReadinessFacts) -> tuple[str, str]:
    """The readiness state and a reason for a person; `STATES[state]` says if it is ready."""
    if facts.halt_reason:
        return "dead_letter_ceiling", facts.halt_reason
    if facts.halted_accounts:
        return "account_halted", f"ad accounts halted: {', '.join(facts.halted_accounts)}"
    if facts.broker_down_s is not None and facts.broker_down_s >= UNREACHABLE_GRACE_S:
        return "broker_unreachable", f"no Kafka broker reachable for {facts.broker_down_s:.0f}s"
    if facts.missing_topics:
        return "topic_missing", f"subscribed topic missing: {', '.join(facts.missing_topics)}"
    if facts.transient_failing_s is not None and facts.transient_failing_s >= UNREACHABLE_GRACE_S:
        return (
            "registry_unreachable",
            f"records held for {facts.transient_failing_s:.0f}s: {facts.transient_error}",
        )
    failing_s = facts.dead_letter_failing_s
    if failing_s is not None and failing_s >= UNREACHABLE_GRACE_S:
        return (
            "dead_letter_failing",
            f"dead-letter writes failing for {failing_s:.0f}s: {facts.dead_letter_error}",
        )
    if facts.all_paused_s is not None and facts.all_paused_s >= facts.paused_unready_s:
        return "backpressure", f"every partition paused for {facts.all_paused_s:.0f}s"
    if facts.lost_s is not None and facts.lost_s >= facts.lost_unready_s:
        return (
            "partitions_lost",
            f"partitions lost {facts.lost_s:.0f}s ago and no rebalance assigned any since",
        )
    if not facts.is_joined:
        return "starting", "not joined to the consumer group yet"
    if facts.assigned == 0:
        return "no_partitions", "joined, 0 partitions assigned (more replicas than partitions)"
    return "consuming", f"{facts.assigned} partitions assigned"


@dataclass(frozen=True, slots=True)
class HealthChecks:
    liveness: Check
    readiness: Check
    stats: Callable[[], dict[str, Any]]
    registry: CollectorRegistry


def _answer(check: Check) -> web.Response:
    is_ok, detail = check()
    body = orjson.dumps({"ok": is_ok, **detail}, default=str)
    return web.Response(status=200 if is_ok else 503, body=body, content_type="application/json")


def health_app(checks: HealthChecks) -> web.Application:
    async def healthz(request: web.Request) -> web.Response:
        return _answer(checks.liveness)

    async def readyz(request: web.Request) -> web.Response:
        return _answer(checks.readiness)

    async def metrics(request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(checks.registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def stats(request: web.Request) -> web.Response:
        return web.Response(
            body=orjson.dumps(checks.stats(), default=str), content_type="application/json"
        )

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/stats", stats)
    return app


async def start_health_server(checks: HealthChecks, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(health_app(checks), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
