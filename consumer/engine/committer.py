"""When offsets are committed, and how long a commit may wait (the source owner's commit and
rebalance calls, which the pipeline hands on here).

Between two `consume()` calls a commit is sent and never waited for; inside a revoke the
partitions' work in flight is drained, then committed and waited for within
`CAPI_REVOKE_TIMEOUT_S`; at shutdown every wait ends by the deadline the signal set. A broker
that refuses the commit metadata's size gets a map half as long each time. Change when or how
offsets are committed here; what may be committed is the ledger's (`stages/offsets.py`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Final

from consumer.engine.admission import Admission
from consumer.engine.fates import Fates
from consumer.observability.telemetry import Instruments
from consumer.records import Commit, TopicPartition
from consumer.stages.batcher import Batcher
from consumer.stages.offsets import OffsetLedger
from consumer.stages.source import KafkaSource

logger = logging.getLogger(__name__)

MIN_FINAL_COMMIT_S: Final = 1.0  # a commit at shutdown gets this long, however late


@dataclass(frozen=True, slots=True)
class CommitSettings:
    commits_offsets: bool  # off in a dry run and test mode: offsets are read, never committed
    commit_interval_s: float
    revoke_timeout_s: float


class Committer:
    def __init__(
        self,
        settings: CommitSettings,
        ledger: OffsetLedger,
        source: KafkaSource,
        admission: Admission,
        batcher: Batcher,
        fates: Fates,
        metrics: Instruments,
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self.source = source
        self.admission = admission
        self.batcher = batcher
        self.fates = fates
        self.metrics = metrics
        # Set by the signal: every wait from then on ends by it (the pod's grace period).
        self.shutdown_deadline_s: float | None = None
        self._metadata_refusals_seen = 0

    async def commit_due(self) -> None:
        """Between two `consume()` calls: send what changed, never wait for the answer
        (`SourceOwner.commit_due`)."""
        if not self.settings.commits_offsets:
            return
        self.shorten_map_if_refused()
        commits = self.ledger.commits(skip=self.source.commits_in_flight)
        if commits:
            await self.source.commit_soon(commits)

    def shorten_map_if_refused(self) -> None:
        """A broker whose offset.metadata.max.bytes is below the map's size refuses the whole
        commit, prefix included: halve the map until it fits, down to plain commits (issue 23,
        defect 5). Counted in capi_offset_map_refused_total; the map only saves re-sends."""
        refusals = self.source.metadata_refusals
        if refusals == self._metadata_refusals_seen:
            return
        self._metadata_refusals_seen = refusals
        ledger = self.ledger
        ledger.max_metadata_bytes = (
            ledger.max_metadata_bytes // 2 if ledger.max_metadata_bytes > 64 else 0
        )
        self.metrics.offset_map_refused.add(1)
        logger.warning(
            "the broker refused the commit metadata's size: map of final offsets shortened",
            extra={"max_metadata_bytes": ledger.max_metadata_bytes},
        )

    def on_committed(self, committed: dict[TopicPartition, Commit]) -> None:
        self.ledger.mark_committed(committed)
        self.metrics.committed.add(len(committed))

    async def commit(
        self, only: set[TopicPartition] | None = None, wait_s: float | None = None
    ) -> None:
        """Commit and wait for the answer: inside a revoke and at shutdown only.

        librdkafka holds a synchronous commit until a group coordinator is known, with no
        timeout of its own. The wait ends after `wait_s` (a revoke's budget), and at the
        shutdown deadline (at least `MIN_FINAL_COMMIT_S`), including a deadline set by a signal
        that arrives while waiting. Given up, the commit may still land later; the next owner
        sends again what it would have carried, and loses nothing.
        """
        if not self.settings.commits_offsets:
            return
        commits = self.ledger.commits()
        if only is not None:
            commits = {tp: c for tp, c in commits.items() if tp in only}
        if not commits:
            return
        started_s = time.monotonic()
        committing = asyncio.ensure_future(self.source.commit_now(commits))
        while True:
            limit_s = self._limit_s(started_s, wait_s)
            # Looked at again every second: a signal may set the shutdown deadline meanwhile.
            timeout_s = 1.0 if limit_s is None else min(1.0, max(0.0, limit_s - time.monotonic()))
            done, _ = await asyncio.wait({committing}, timeout=timeout_s)
            if done:
                break
            if limit_s is not None and time.monotonic() >= limit_s:
                committing.cancel()
                logger.warning(
                    "commit unanswered (no group coordinator?): the next owner sends again "
                    "what it would have carried",
                    extra={"waited_s": round(time.monotonic() - started_s, 1)},
                )
                return
        self.on_committed(committing.result())
        self.shorten_map_if_refused()

    def _limit_s(self, started_s: float, wait_s: float | None) -> float | None:
        limits = [] if wait_s is None else [started_s + wait_s]
        if self.shutdown_deadline_s is not None:
            limits.append(max(self.shutdown_deadline_s, started_s + MIN_FINAL_COMMIT_S))
        return min(limits, default=None)

    async def on_assign(self, partitions: list[tuple[TopicPartition, int, Commit | None]]) -> None:
        for tp, generation, committed in partitions:
            self.ledger.assign(tp, generation, committed)

    async def on_revoke(self, partitions: list[TopicPartition]) -> None:
        """Flush, wait (one deadline for every step) for their in-flight work, commit, forget."""
        deadline = time.monotonic() + self.settings.revoke_timeout_s
        if self.shutdown_deadline_s is not None:  # closing: share the one shutdown budget
            deadline = min(deadline, self.shutdown_deadline_s)
        started = time.monotonic()
        self.admission.forget(set(partitions))
        self.batcher.flush()
        # Fates arrive from delivery and the dead-letter writer alike. The source loop, which
        # commits every commit interval, waits inside this callback: keep committing here, so
        # answers that arrive during a long drain are recorded promptly.
        interval_s = self.settings.commit_interval_s
        next_commit_s = time.monotonic() + interval_s
        while any(self.ledger.unfinished(tp) for tp in partitions):
            now = time.monotonic()
            if now >= deadline:
                break
            await self.fates.wait_for_progress(min(deadline, next_commit_s) - now)
            if time.monotonic() >= next_commit_s:
                next_commit_s = time.monotonic() + interval_s
                await self.commit(wait_s=max(MIN_FINAL_COMMIT_S, deadline - time.monotonic()))
        unfinished = sum(self.ledger.unfinished(tp) for tp in partitions)
        # The revoke's last commit gets a budget of its own: the drain may have used the first.
        await self.commit(
            set(partitions), wait_s=max(MIN_FINAL_COMMIT_S, self.settings.revoke_timeout_s)
        )
        logger.info(
            "revoke drained",
            extra={
                "partitions": [f"{t}/{p}" for t, p in partitions],
                "unfinished": unfinished,
                "waited_s": round(time.monotonic() - started, 3),
                "committed": {f"{t}/{p}": self.ledger.committed((t, p)) for t, p in partitions},
            },
        )
        for tp in partitions:
            self.ledger.revoke(tp)

    async def on_lost(self, partitions: list[TopicPartition]) -> None:
        self.admission.forget(set(partitions))
        for tp in partitions:
            self.ledger.lose(tp)
