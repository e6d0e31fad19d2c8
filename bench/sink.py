"""A minimal fast stand-in for the events endpoint: no validation, answers every event processed.

python -m bench.sink --port 9000 [--latency-ms 50] [--outage-s 20]

With --outage-s, every request in the first seconds after the first one is answered 503, as
from an API that is down: the consumer keeps retrying and holds what it consumed meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import orjson
from aiohttp import web

_PROCESSED = b'{"status":"processed","error_message":null,"warning_message":null}'


class Counters:
    requests = 0
    events = 0
    refused = 0
    trace_bytes = 0
    first_request_at: float | None = None


def build_app(latency_s: float, outage_s: float = 0.0) -> web.Application:
    counters = Counters()
    answers: dict[int, bytes] = {}

    async def events(request: web.Request) -> web.Response:
        body = await request.read()
        now = time.monotonic()
        if counters.first_request_at is None:
            counters.first_request_at = now
        if now - counters.first_request_at < outage_s:
            counters.refused += 1
            return web.Response(status=503, text="unavailable")
        count = len(orjson.loads(body)["data"])
        if latency_s:
            await asyncio.sleep(latency_s)
        counters.requests += 1
        counters.events += count
        answer = answers.get(count)
        if answer is None:
            answer = answers[count] = (
                b'{"num_events_received":%d,"num_events_processed":%d,"events":[' % (count, count)
                + b",".join([_PROCESSED] * count)
                + b"]}"
            )
        return web.Response(
            body=answer, content_type="application/json", headers={"x-pinterest-rid": "bench"}
        )

    async def traces(request: web.Request) -> web.Response:
        counters.trace_bytes += len(await request.read())
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "requests": counters.requests,
                "events": counters.events,
                "refused": counters.refused,
                "trace_bytes": counters.trace_bytes,
            }
        )

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v5/ad_accounts/{ad_account_id}/events", events)
    app.router.add_post("/v1/traces", traces)  # OTLP/HTTP: takes spans, keeps only a count
    app.router.add_get("/stats", stats)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--outage-s", type=float, default=0.0)
    args = parser.parse_args()
    web.run_app(
        build_app(args.latency_ms / 1000, args.outage_s),
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
    )


if __name__ == "__main__":
    main()
