"""Health endpoints: /healthz (loop and source alive), /readyz (assigned, authorized, not halted),
/metrics (Prometheus text), /stats (JSON counters for `consumer status` and the demo)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

Check = Callable[[], tuple[bool, dict[str, Any]]]


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
