"""Send batches to POST /v5/ad_accounts/{id}/events and report one outcome per event.

One pooled aiohttp session, a token bucket and an in-flight limit per ad account. `classify`
is the one table that decides what each answer means: per-event outcomes (200, 422), split the
request to find the bad events (400, 413), halt the account and keep its events until
configuration changes (401, 403, 404, any other 4xx or 3xx, a 200 without per-event answers), or
retry the same bytes with exponential backoff and full jitter (429, 5xx, timeouts, no answer).
Before every attempt, events whose partition this process no longer holds (`is_wanted`) are
taken out and answered `abandoned`: their new owner sends them, so sending them here too would
only be a needless re-send. Results go to `on_result`; offsets are the caller's business.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from opentelemetry import trace
from opentelemetry.context import Context

from consumer.errors import backoff_s
from consumer.observability import telemetry as tm
from consumer.records import (
    AdAccountId,
    Batch,
    BatchResult,
    Conversion,
    EventOutcome,
    Secret,
    mask_url_credentials,
    request_body,
)
from consumer.stages.answers import (
    NO_ANSWER,
    UNKNOWN_STATUS,
    Action,
    Decision,
    cause,
    classify,
    error_message,
    parse_outcomes,
    row,
)
from consumer.stages.ratelimit import RateLimiter

logger = logging.getLogger(__name__)

# Not sent (again): the event's partition was revoked or lost while it waited or was retried.
ABANDONED = EventOutcome("abandoned", "offset.partition_gone")


@dataclass(frozen=True, slots=True)
class DeliverySettings:
    base_url: str = "https://api.pinterest.com"
    is_test: bool = False
    max_in_flight_per_account: int = 4
    rate_per_minute: int = 5000
    # Test requests (?test=true) are limited to 10 per second per app, whatever the account.
    test_rate_per_s: float = 10.0
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 60.0
    auth_retry_s: float = 60.0
    max_retry_age_s: float | None = None


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    payload: Any
    request_id: str
    retry_after_s: float | None
    outcomes: list[EventOutcome] | None = None  # parsed once, for the span and the caller
    decision: Decision = NO_ANSWER  # what it means (`answers.classify`)


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class DeliveryClient:
    """Owns delivery tasks; `submit` never blocks, results arrive through `on_result`."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        settings: DeliverySettings,
        token_for: Callable[[AdAccountId], Secret | None],
        on_result: Callable[[BatchResult], None],
        telemetry: tm.Telemetry,
        on_crash: Callable[[BaseException], None] = lambda exc: None,
        clock: Callable[[], float] | None = None,
        rng: random.Random | None = None,
        # Whether an event's partition is still held, by the assignment (generation) it was
        # read in: asked once per run of events of one assignment, before every attempt.
        is_wanted: Callable[[Conversion], bool] = lambda conversion: True,
    ) -> None:
        self._session = session
        self._is_wanted = is_wanted
        self.settings = settings
        self._token_for = token_for
        self._on_result = on_result
        self._on_crash = on_crash
        self._telemetry = telemetry
        self._clock = clock or time.monotonic  # read at construction (the simulation patches it)
        self._rng = rng or random.Random()
        self._slots: dict[AdAccountId, asyncio.Semaphore] = {}
        self._limiters: dict[AdAccountId, RateLimiter] = {}
        self._unknown_logged: set[str] = set()
        self._test_limiter = (
            RateLimiter(settings.test_rate_per_s, 1.0, self._clock) if settings.is_test else None
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self.halted: dict[AdAccountId, str] = {}
        self.in_flight_events = 0
        self.last_success_s: float | None = None
        base = urllib.parse.urlsplit(settings.base_url)
        # HTTP client semantic conventions: required on every request span.
        self._server: dict[str, str | int] = {
            tm.ATTR_SERVER: base.hostname or "",
            tm.ATTR_SERVER_PORT: base.port or (443 if base.scheme == "https" else 80),
        }

    @property
    def is_full(self) -> bool:
        """Never: the batcher's watermark counts the events in delivery too."""
        return False

    def submit(self, batch: Batch) -> None:
        task = asyncio.get_running_loop().create_task(self._deliver(batch))
        self._tasks.add(task)
        self.in_flight_events += len(batch)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(self._check_crashed)

    def _check_crashed(self, task: asyncio.Task[None]) -> None:
        # A delivery task that dies would leave its events unfinished for ever: stop loudly.
        if not task.cancelled() and (exc := task.exception()) is not None:
            self._on_crash(exc)

    async def drain(self, deadline_s: float) -> bool:
        """Wait for in-flight batches until the monotonic `deadline_s`; True if all finished."""
        while self._tasks:
            timeout = deadline_s - self._clock()
            if timeout <= 0:
                return False
            await asyncio.wait(set(self._tasks), timeout=timeout)
        return True

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _url(self, ad_account: AdAccountId) -> str:
        url = f"{self.settings.base_url}/v5/ad_accounts/{ad_account}/events"
        return url + "?test=true" if self.settings.is_test else url

    async def _deliver(self, batch: Batch) -> None:
        slot = self._slots.get(batch.ad_account)
        if slot is None:
            slot = self._slots[batch.ad_account] = asyncio.Semaphore(
                self.settings.max_in_flight_per_account
            )
        async with slot:
            await self._send(batch, list(range(len(batch))), [0])

    def _report(
        self,
        batch: Batch,
        picked: list[int],
        outcomes: Sequence[EventOutcome],
        request_id: str,
        attempts: list[int],
    ) -> None:
        """The final outcomes of the events at `picked`, as soon as they are final: the good
        half of a bisected batch is not held back while the other half is retried (its
        offsets would wait, and a crash meanwhile would make their next owner send it again)."""
        part = batch
        if len(picked) != len(batch):
            conversions = tuple(batch.conversions[i] for i in picked)
            encoded = tuple(batch.encoded[i] for i in picked)
            part = Batch(batch.ad_account, conversions, encoded, batch.created_at_s)
        self.in_flight_events -= len(picked)
        self._on_result(BatchResult(part, tuple(outcomes), request_id, attempts[0]))

    async def _wait_for_token(self, ad_account: AdAccountId) -> None:
        limiter = self._limiters.get(ad_account)
        if limiter is None:
            rate_per_s = self.settings.rate_per_minute / 60
            limiter = self._limiters[ad_account] = RateLimiter(
                rate_per_s, max(1.0, rate_per_s), self._clock
            )
        delay = limiter.delay_s()
        if self._test_limiter is not None:  # one bucket for the whole app, every account
            delay = max(delay, self._test_limiter.delay_s())
        if delay > 0:
            await asyncio.sleep(delay)

    def _unwanted(self, batch: Batch, picked: list[int]) -> list[int]:
        """The indexes among `picked` whose events are no longer wanted. `is_wanted` answers
        for a partition's assignment (its generation), so it is asked once per run of them."""
        gone = []
        last: tuple[str, int, int] | None = None
        is_wanted = True
        for i in picked:
            conversion = batch.conversions[i]
            coords = conversion.coords
            assignment = (coords.topic, coords.partition, conversion.envelope.generation)
            if assignment != last:
                last, is_wanted = assignment, self._is_wanted(conversion)
            if not is_wanted:
                gone.append(i)
        return gone

    async def _send(self, batch: Batch, picked: list[int], attempts: list[int]) -> None:
        """Deliver the events of `batch` at the indexes `picked` until each has a final
        outcome (retrying as needed), and report them (`_report`)."""
        account = batch.ad_account
        started = self._clock()
        retry = 0
        while True:
            gone = self._unwanted(batch, picked)
            if gone:  # their partition was revoked or lost: the new owner sends them
                self._report(batch, gone, [ABANDONED] * len(gone), "", attempts)
                left_out = set(gone)
                picked = [i for i in picked if i not in left_out]
                if not picked:
                    return
            encoded = [batch.encoded[i] for i in picked]
            token = self._token_for(account)
            if token is None:
                self._halt(account, "no token configured for this ad account")
                await asyncio.sleep(self.settings.auth_retry_s)
                continue
            await self._wait_for_token(account)
            attempts[0] += 1
            answer = await self._post(batch, encoded, token, retry)
            decision = answer.decision
            if decision.action is Action.OUTCOMES:
                self.halted.pop(account, None)
                self.last_success_s = self._clock()
                outcomes = answer.outcomes
                if outcomes is None:
                    message = error_message(answer.payload)
                    outcomes = [EventOutcome("failed", decision.reason, message)] * len(encoded)
                self._report(batch, picked, outcomes, answer.request_id, attempts)
                return
            if decision.action is Action.BISECT:
                self.halted.pop(account, None)
                middle = len(picked) // 2
                await self._send(batch, picked[:middle], attempts)
                await self._send(batch, picked[middle:], attempts)
                return
            if decision.action is Action.HALT:
                detail = decision.detail or error_message(answer.payload)
                self._halt(account, f"HTTP {answer.status}: {detail}")
                self._log_failure(batch, len(encoded), answer, "halted; retrying slowly")
                await asyncio.sleep(self.settings.auth_retry_s)
                continue
            retry += 1
            self._telemetry.instruments.retries.add(1, {"cause": cause(answer.status)})
            max_age = self.settings.max_retry_age_s
            if max_age is not None and self._clock() - started > max_age:
                message = f"gave up after {retry} attempts over {max_age:.0f}s"
                exhausted = EventOutcome("failed", "pinterest.retry_exhausted", message)
                self._report(batch, picked, [exhausted] * len(picked), answer.request_id, attempts)
                return
            policy = decision.backoff
            delay = backoff_s(
                retry,
                self.settings.backoff_base_s * policy.base_scale,
                self.settings.backoff_cap_s * policy.cap_scale,
                self._rng,
                answer.retry_after_s if policy.honours_retry_after else None,
            )
            self._log_failure(batch, len(encoded), answer, f"retrying in {delay:.2f}s")
            await asyncio.sleep(delay)

    def _halt(self, account: AdAccountId, reason: str) -> None:
        if account not in self.halted:
            logger.error("ad account halted", extra={"ad_account": account, "reason": reason})
        self.halted[account] = reason

    async def _post(
        self, batch: Batch, encoded: Sequence[bytes], token: Secret, retry: int
    ) -> _Answer:
        url = self._url(batch.ad_account)
        body = request_body(encoded)
        traced = [c for conv in batch.conversions if (c := _span_context(conv))]
        # The first traced message's process span is also the parent, so backends without
        # span links (Zipkin) still show producer → process → POST in one trace; untraced
        # batches get a root span rather than the context of whichever chunk opened them.
        parent = (
            trace.set_span_in_context(trace.NonRecordingSpan(traced[0])) if traced else Context()
        )
        with self._telemetry.tracer.start_as_current_span(
            tm.SPAN_DELIVER,
            context=parent,
            kind=trace.SpanKind.CLIENT,
            links=[trace.Link(c) for c in traced[:128]],
            attributes={
                tm.ATTR_HTTP_METHOD: "POST",
                tm.ATTR_URL: mask_url_credentials(url),
                tm.ATTR_AD_ACCOUNT: batch.ad_account,
                tm.ATTR_BATCH_SIZE: len(encoded),
                tm.ATTR_HTTP_RESEND: retry,
                **self._server,
            },
        ) as span:
            started_s = time.perf_counter()
            answer = await self._request(url, body, token)
            instruments = self._telemetry.instruments
            instruments.requests.add(1, {"status": str(answer.status)})
            http_attributes: dict[str, str | int] = {tm.ATTR_HTTP_METHOD: "POST", **self._server}
            span.set_attribute(tm.ATTR_HTTP_STATUS, answer.status)
            span.set_attribute(tm.ATTR_REQUEST_ID, answer.request_id)
            outcomes = None
            if row(answer.status).reads_outcomes:
                outcomes = parse_outcomes(answer.payload, len(encoded))
                processed = sum(1 for o in outcomes or () if o.status == "processed")
                span.set_attribute(tm.ATTR_PROCESSED, processed)
                span.set_attribute(tm.ATTR_FAILED, len(outcomes or ()) - processed)
            self._log_unknown_statuses(outcomes, answer.request_id)
            decision = classify(answer.status, outcomes is not None, len(encoded))
            answer = dataclasses.replace(answer, outcomes=outcomes, decision=decision)
            if cause(answer.status) != "connection":
                http_attributes[tm.ATTR_HTTP_STATUS] = answer.status
            if decision.is_error:
                http_attributes[tm.ATTR_ERROR_TYPE] = cause(answer.status)
                span.set_attribute(tm.ATTR_ERROR_TYPE, cause(answer.status))
            instruments.http_client_duration_s.record(
                time.perf_counter() - started_s, http_attributes
            )
            return answer

    async def _request(self, url: str, body: bytes, token: Secret) -> _Answer:
        headers = {"Authorization": f"Bearer {token.reveal()}", "Content-Type": "application/json"}
        try:
            async with self._session.post(url, data=body, headers=headers) as response:
                raw = await response.read()
                request_id = response.headers.get("x-pinterest-rid", "")
                try:
                    payload = orjson.loads(raw) if raw else None
                except orjson.JSONDecodeError:
                    payload = None
                return _Answer(response.status, payload, request_id, _retry_after(response.headers))
        except (aiohttp.ClientError, TimeoutError) as exc:
            return _Answer(0, {"message": type(exc).__name__}, "", None)

    def _log_unknown_statuses(self, outcomes: list[EventOutcome] | None, request_id: str) -> None:
        """A per-event status other than processed/failed: logged once per status."""
        for outcome in outcomes or ():
            status = outcome.message.split(":", 1)[0]  # "status 'x'", never Pinterest's text
            if outcome.reason == UNKNOWN_STATUS and status not in self._unknown_logged:
                self._unknown_logged.add(status)
                logger.warning(
                    "Pinterest answered an event status this version does not know: "
                    "dead-lettered as not delivered (logged once per status)",
                    extra={"status": status, "request_id": request_id},
                )

    def _log_failure(self, batch: Batch, size: int, answer: _Answer, action: str) -> None:
        payload = answer.payload if isinstance(answer.payload, dict) else {}
        logger.warning(
            "delivery failed",
            extra={
                "ad_account": batch.ad_account,
                "batch_size": size,
                "status": answer.status,
                "pinterest_code": payload.get("code"),
                "pinterest_message": payload.get("message"),
                "request_id": answer.request_id,
                "action": action,
            },
        )


def _span_context(conversion: Any) -> trace.SpanContext | None:
    context = getattr(conversion, "span_context", None)
    return context if isinstance(context, trace.SpanContext) and context.is_valid else None
