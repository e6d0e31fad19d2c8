"""Liveness, readiness, `/stats` and the observable gauges, read from the stages (read-only).

Add a readiness condition in `health.assess` (the rule) and, if it needs a new fact, in
`facts()` here (where the fact is read); nothing in this module changes a stage.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from consumer.conversion.quality import MatchQuality
from consumer.engine.fates import COUNTS, Fates
from consumer.engine.process import RecordProcessor
from consumer.observability import telemetry as tm
from consumer.observability.health import STATES, ReadinessFacts, assess
from consumer.records import AdAccountId
from consumer.stages.batcher import Batcher
from consumer.stages.deadletter import DeadLetterWriter
from consumer.stages.offsets import OffsetLedger
from consumer.stages.source import KafkaSource

LIVENESS_STALL_S = 60.0
Gauge = tuple[str, float, dict[str, str]]


class Insight:
    def __init__(
        self,
        source: KafkaSource,
        ledger: OffsetLedger,
        batcher: Batcher,
        fates: Fates,
        quality: MatchQuality,
        processor: RecordProcessor,
        halted_accounts: Callable[[], Mapping[AdAccountId, str]],
        paused_unready_s: float,
        lost_unready_s: float,
        commits_offsets: bool,
        dead_letters: DeadLetterWriter,
    ) -> None:
        self._source = source
        self._ledger = ledger
        self._batcher = batcher
        self._fates = fates
        self._quality = quality
        self._processor = processor
        self._halted_accounts = halted_accounts
        self._paused_unready_s = paused_unready_s
        self._lost_unready_s = lost_unready_s
        self._dead_letters = dead_letters
        self._commits_offsets = commits_offsets
        self._started_s = time.monotonic()
        # Pinterest's event quality score per account (worst status), when it is polled.
        self.event_quality: Callable[[], dict[str, str]] = dict

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        stalled_s = time.monotonic() - self._source.last_turn_s
        return stalled_s < LIVENESS_STALL_S, {"source_stalled_s": round(stalled_s, 1)}

    def facts(self) -> ReadinessFacts:
        source, now = self._source, time.monotonic()

        def lasted(since: float | None) -> float | None:
            return None if since is None else now - since

        return ReadinessFacts(
            halt_reason=self._fates.halt_reason,
            halted_accounts=tuple(sorted(self._halted_accounts())),
            broker_down_s=lasted(source.broker_down_since),
            missing_topics=tuple(sorted(source.missing_topics)),
            transient_failing_s=lasted(source.transient_since),
            transient_error=source.transient_error,
            all_paused_s=lasted(source.all_paused_since),
            paused_unready_s=self._paused_unready_s,
            is_joined=source.is_joined,
            assigned=len(source.assigned),
            dead_letter_failing_s=lasted(self._dead_letters.failing_since),
            dead_letter_error=self._dead_letters.last_error,
            lost_s=lasted(source.lost_since),
            lost_unready_s=self._lost_unready_s,
        )

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        state, reason = assess(self.facts())
        detail: dict[str, Any] = {
            "state": state,
            "reason": reason,
            "assigned_partitions": len(self._source.assigned),
            "paused_partitions": len(self._source.paused),
            "halted_accounts": dict(self._halted_accounts()),
        }
        if self._fates.halt_reason:
            detail["halted"] = self._fates.halt_reason
        return STATES[state], detail

    def stats(self) -> dict[str, Any]:
        source, quality = self._source, self._quality
        return {
            **{k: self._fates.counts[k] for k in COUNTS},
            "pending": self._batcher.pending,
            "unfinished_offsets": self._ledger.unfinished(),
            "uncommitted_partitions": self._ledger.uncommitted() if self._commits_offsets else 0,
            "assigned": sorted(f"{t}/{p}" for t, p in source.assigned),
            "paused": len(source.paused),
            "held": source.held,
            "lag": {f"{t}/{p}": lag for (t, p), lag in source.lag.items()},
            "halted_accounts": dict(self._halted_accounts()),
            "halted": self._fates.halt_reason,
            "match_coverage": {k: round(v, 4) for k, v in quality.coverage().items()},
            "pinterest_eqs": self.event_quality(),
            "normalize_dropped": {f"{f}/{r}": n for (f, r), n in quality.dropped.items()},
            "events_checked": dict(self._processor.checked),
            "uptime_s": round(time.monotonic() - self._started_s, 1),
        }

    def gauges(self) -> list[Gauge]:
        state, _ = assess(self.facts())  # once: ready and the per-state series agree
        gauges: list[Gauge] = [
            (tm.M_IN_FLIGHT, float(self._ledger.unfinished()), {}),
            (tm.M_PAUSED, float(len(self._source.paused)), {}),
            (tm.M_HALTED, float(len(self._halted_accounts())), {}),
            (tm.M_READY, float(STATES[state]), {}),
            # One series per readiness state, 1 for the current one: alerts select by state.
            *[(tm.M_STATE, float(s == state), {"state": s}) for s in STATES],
            (tm.M_OFFSET_MAP_OVERFLOW, float(self._ledger.map_overflows), {}),
        ]
        for result, count in self._processor.checked.items():
            gauges.append((tm.M_EVENTS_CHECKED, float(count), {"result": result}))
        for (topic, partition), lag in self._source.lag.items():
            gauges.append((tm.M_LAG, float(lag), {"topic": topic, "partition": str(partition)}))
        quality = self._quality
        for (account, event_name), count in quality.events.items():
            labels = {"ad_account": account, "event_name": event_name}
            gauges.append((tm.M_MATCH_EVENTS, float(count), labels))
        for (account, event_name, identifier), count in quality.by_identifier.items():
            labels = {"ad_account": account, "event_name": event_name, "identifier": identifier}
            gauges.append((tm.M_MATCH_IDENTIFIER, float(count), labels))
        for (account, event_name, carried), count in quality.by_count.items():
            labels = {"ad_account": account, "event_name": event_name, "identifiers": str(carried)}
            gauges.append((tm.M_MATCH_COUNT, float(count), labels))
        for (field, reason), count in quality.dropped.items():
            gauges.append(
                (tm.M_NORMALIZE_DROPPED, float(count), {"field": field, "reason": reason})
            )
        return gauges
