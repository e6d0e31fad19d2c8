"""The source's commits: what is in flight, what Kafka answered, what it refused.

Two ways to commit, both storing the offsets first (`enable.auto.offset.store` is off):
`send_soon` between two `consume()` calls, never waiting (Kafka's answer comes back through the
client's `on_commit`, inside `consume()`), at most one in flight per partition so that answers
arrive in the order the ledger expects; `send_now` inside a revoke and at shutdown, waiting for
the answer, because the partition's next owner must see it. Failures are counted; a refusal of
the metadata's size is counted apart, and the pipeline shortens its map of final offsets.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from consumer.records import Commit
from consumer.records import TopicPartition as TP

logger = logging.getLogger(__name__)
# An asynchronous commit unanswered this long is given up on and may be sent again (librdkafka
# answers a commit it cannot deliver after socket.timeout.ms, 60 s by default).
COMMIT_GIVE_UP_S = 90.0


class Commits:
    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        # Asynchronous commits Kafka has not answered yet: (what was sent, when).
        self._in_flight: dict[TP, tuple[Commit, float]] = {}
        self.failures = 0
        # Refused because the metadata (the map of final offsets) was longer than the broker's
        # offset.metadata.max.bytes.
        self.metadata_refusals = 0

    @property
    def in_flight(self) -> set[TP]:
        """Partitions with an asynchronous commit Kafka has not answered (never sent again
        meanwhile: the ledger's view of what is committed must follow the answers in order)."""
        now = self._clock()
        return {
            tp for tp, (_, sent_s) in self._in_flight.items() if now - sent_s < COMMIT_GIVE_UP_S
        }

    def forget(self, tp: TP) -> None:
        """The partition went away: an answer still to come is ignored."""
        self._in_flight.pop(tp, None)

    async def send_soon(self, client: Any, commits: dict[TP, Commit]) -> None:
        """Store and commit without waiting.

        A synchronous commit between two `consume()` calls blocked the whole loop for as long
        as the group had no coordinator (45 s and more on each try during a broker restart):
        no `consume()`, so no rebalance callbacks, logs or heartbeats of the app.
        """
        if not commits:
            return
        if not await self._send(client, commits, asynchronous=True):
            return
        now = self._clock()
        for tp, commit in commits.items():
            self._in_flight[tp] = (commit, now)

    def answered(
        self, error: KafkaError | None, partitions: list[TopicPartition]
    ) -> dict[TP, Commit]:
        """Kafka's answer to an asynchronous commit: what it took."""
        committed: dict[TP, Commit] = {}
        for tp in partitions or []:
            key = (tp.topic, tp.partition)
            sent = self._in_flight.get(key)
            if sent is None or sent[0].offset != tp.offset:
                continue  # answered after a revoke, or for a commit sent since
            del self._in_flight[key]
            if error is None and tp.error is None:
                committed[key] = sent[0]
            else:
                self._failed(tp, tp.error or error)
        return committed

    async def send_now(self, client: Any, commits: dict[TP, Commit]) -> dict[TP, Commit]:
        """Store then commit and wait for Kafka's answer; return what Kafka took.

        A synchronous commit reports failures per partition without raising, so each
        partition's error is checked: the caller retries the rest.
        """
        if not commits:
            return {}
        for tp in commits:
            self._in_flight.pop(tp, None)  # this answer supersedes an earlier one
        answered = await self._send(client, commits, asynchronous=False)
        committed = {}
        for tp in answered if isinstance(answered, list) else []:
            key = (tp.topic, tp.partition)
            if tp.error is None and key in commits:
                committed[key] = commits[key]
            elif tp.error is not None:
                self._failed(tp, tp.error)
        return committed

    async def _send(self, client: Any, commits: dict[TP, Commit], asynchronous: bool) -> Any:
        """The client's answer (a list when synchronous), or False when the commit raised."""
        partitions = [TopicPartition(t, p, c.offset, c.metadata) for (t, p), c in commits.items()]
        try:
            await client.store_offsets(offsets=partitions)
            answer = await client.commit(offsets=partitions, asynchronous=asynchronous)
        except KafkaException as exc:
            self.failures += 1
            logger.warning("commit failed, will retry", extra={"error": str(exc)})
            return False
        return answer if not asynchronous else True

    def _failed(self, tp: Any, error: KafkaError | None) -> None:
        self.failures += 1
        if error is not None and error.code() == KafkaError.OFFSET_METADATA_TOO_LARGE:
            self.metadata_refusals += 1
        logger.warning(
            "commit failed for a partition, will retry",
            extra={"partition": f"{tp.topic}/{tp.partition}", "error": str(error)},
        )
