"""Pinterest's Event Quality Score (EQS) per ad account, read beside the events we send.

`GET /v5/ad_accounts/{id}/conversion_eqs` (API 5.23 on) says what Pinterest makes of the
identifiers it receives: an overall status (`NEEDS_IMPROVEMENT`, `FAIR`, `GOOD`) and, per
identifier ("quality component") and event type, its coverage, per source platform and ingestion
source. It needs an OAuth token with `ads:read` (a conversion access token is not enough), read
from `CAPI_EQS_TOKEN` (or `_FILE`); without one nothing here runs. Every account the consumer
has built events for is polled once per `CAPI_EQS_INTERVAL_S` (hourly by default, jittered by
±10 % so replicas spread out), the interval doubling on a 429 up to six hours, a minute after a
read that got no answer or a 5xx. The last answer
per account is exported as gauges next to our own `capi_match_*` series, and `consumer status`
shows each account's worst status.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
import orjson

from consumer.observability import telemetry as tm
from consumer.records import Secret

logger = logging.getLogger(__name__)
STATUSES: Final = ("NEEDS_IMPROVEMENT", "FAIR", "GOOD")  # worst first
LOOKBACKS: Final = ("1d", "14d")
MAX_BACKOFF_S: Final = 6 * 3600.0
IDLE_POLL_S: Final = 5.0  # how soon an account is first read once events are built for it
RETRY_S: Final = 60.0  # after a read that got no answer or a 5xx
Gauge = tuple[str, float, dict[str, str]]


@dataclass(frozen=True, slots=True)
class EqsSettings:
    base_url: str
    token: Secret
    interval_s: float = 3600.0
    lookback: str = "14d"


@dataclass(frozen=True, slots=True)
class Score:
    """One EQS answer for a (source platform, ingestion source) of an account."""

    status: str
    coverage: dict[tuple[str, str], float] = field(default_factory=dict)  # (component, event)


def parse_scores(payload: Any) -> dict[tuple[str, str], Score]:
    """The answer's scores by (source_platform, ingestion_source); what does not have the
    documented shape is left out. Coverage is a percentage in the API, a ratio here."""
    scores: dict[tuple[str, str], Score] = {}
    for item in payload if isinstance(payload, list) else []:
        if not isinstance(item, dict) or not isinstance(item.get("overall_status"), str):
            continue
        coverage: dict[tuple[str, str], float] = {}
        components = item.get("quality_components")
        for component, by_event in (components if isinstance(components, dict) else {}).items():
            for event_type, details in (by_event if isinstance(by_event, dict) else {}).items():
                value = details.get("coverage") if isinstance(details, dict) else None
                if isinstance(value, int | float) and not isinstance(value, bool):
                    coverage[(str(component), str(event_type))] = float(value) / 100
        platform = str(item.get("source_platform") or "ALL")
        source = str(item.get("ingestion_source") or "ALL")
        scores[(platform, source)] = Score(str(item["overall_status"])[:40], coverage)
    return scores


class EqsPoller:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        settings: EqsSettings,
        accounts: Callable[[], Iterable[str]],
        rng: random.Random | None = None,
    ) -> None:
        self._session = session
        self.settings = settings
        self._accounts = accounts
        self._rng = rng or random.Random()
        self.scores: dict[str, dict[tuple[str, str], Score]] = {}
        self.interval_s = settings.interval_s
        self.last_error = ""

    async def run(self, idle_s: float = IDLE_POLL_S) -> None:
        while True:
            accounts = sorted(set(self._accounts()))
            if not accounts:  # nothing built yet: read as soon as there is an account
                await asyncio.sleep(idle_s)
                continue
            statuses = []
            for account in accounts:
                statuses.append(await self.poll(account))
                if statuses[-1] == 429:
                    break
            if 429 in statuses:  # back off for the whole app: the limit is per token
                self.interval_s = min(MAX_BACKOFF_S, self.interval_s * 2)
                wait_s = self.interval_s
            else:
                self.interval_s = self.settings.interval_s
                # No answer or a 5xx: try again in a minute rather than in an hour.
                transient = any(s == 0 or s >= 500 for s in statuses)
                wait_s = min(RETRY_S, self.interval_s) if transient else self.interval_s
            await asyncio.sleep(wait_s * self._rng.uniform(0.9, 1.1))

    async def poll(self, account: str) -> int:
        """Read one account's EQS; the HTTP status (0: no answer). Keeps the last good one."""
        url = f"{self.settings.base_url}/v5/ad_accounts/{account}/conversion_eqs"
        params = {"lookback_period": self.settings.lookback}
        headers = {"Authorization": f"Bearer {self.settings.token.reveal()}"}
        try:
            async with self._session.get(url, params=params, headers=headers) as response:
                body = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._failed(account, f"no answer: {type(exc).__name__}")
            return 0
        if status != 200:
            self._failed(account, f"HTTP {status}")
            return status
        try:
            scores = parse_scores(orjson.loads(body))
        except orjson.JSONDecodeError:
            self._failed(account, "an answer that is not JSON")
            return status
        self.scores[account] = scores
        self.last_error = ""
        return status

    def _failed(self, account: str, why: str) -> None:
        if why != self.last_error:  # once per kind of failure, not once per hour and account
            logger.warning(
                "could not read Pinterest's event quality score",
                extra={"ad_account": account, "error": why},
            )
        self.last_error = why

    def worst(self) -> dict[str, str]:
        """Each account's worst overall status across platforms and sources."""
        rank = {status: i for i, status in enumerate(STATUSES)}
        return {
            account: min((s.status for s in scores.values()), key=lambda s: rank.get(s, -1))
            for account, scores in sorted(self.scores.items())
            if scores
        }

    def gauges(self) -> list[Gauge]:
        gauges: list[Gauge] = []
        for account, scores in self.scores.items():
            for (platform, source), score in scores.items():
                labels = {
                    "ad_account": account,
                    "source_platform": platform,
                    "ingestion_source": source,
                }
                known = STATUSES if score.status in STATUSES else (*STATUSES, score.status)
                for status in known:  # one series per status, 1 for the current: alert on it
                    value = float(status == score.status)
                    gauges.append((tm.M_EQS_STATUS, value, {**labels, "status": status}))
                for (component, event_type), ratio in score.coverage.items():
                    extra = {"component": component, "event_type": event_type}
                    gauges.append((tm.M_EQS_COVERAGE, ratio, {**labels, **extra}))
        return gauges
