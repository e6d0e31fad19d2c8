"""An in-memory stand-in for the asyncio Kafka consumer, faithful where the source depends on it.

Behaves like librdkafka (2.16) in the ways `consumer.stages.source` relies on:
- rebalance callbacks run inside `consume()`, before it returns any message;
- a partition's pause flag lives on the client's partition object and survives revoke and a
  later re-assign (librdkafka issue 1849), so a partition paused, revoked and assigned back
  comes back paused unless someone resumes it;
- a cooperative assign of nothing still calls `on_assign` with an empty list;
- `commit(asynchronous=True)` returns at once and its answer arrives through `on_commit` during a
  later `consume()`; a synchronous commit answers per partition; while the coordinator is away
  asynchronous commits are answered with an error, synchronous ones raise `_WAIT_COORD`.
Only for tests of one process; the real broker is in `tests/integration`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

TP = tuple[str, int]
Callback = Callable[..., Awaitable[None]]


@dataclass
class ModelMessage:
    """The subset of `confluent_kafka.Message` that the source reads."""

    _topic: str
    _partition: int
    _offset: int
    _value: bytes
    _headers: list[tuple[str, bytes]] = field(default_factory=list)

    def error(self) -> KafkaError | None:
        return None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return self._value

    def key(self) -> bytes | None:
        return None

    def headers(self) -> list[tuple[str, bytes]]:
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_700_000_000_000 + self._offset)


class KafkaModel:
    """One consumer's view of a group: logs, assignment, pause flags, commits."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.logs: dict[TP, list[ModelMessage]] = {}
        self.commits: dict[TP, tuple[int, str]] = {}
        self.assignment: set[TP] = set()
        self.paused_flags: set[TP] = set()  # survives revoke, as in librdkafka
        self.positions: dict[TP, int] = {}
        self.is_coordinator_up = True
        self.committed_reads_to_fail = 0
        self.calls: list[str] = []
        self.consumed = asyncio.Event()  # set after every consume() call
        self._rebalances: list[tuple[str, list[TP]]] = []
        self._commit_answers: list[tuple[KafkaError | None, list[TopicPartition]]] = []
        self._callbacks: dict[str, Callback] = {}
        self.is_closed = False

    # --- what a test does to the world --------------------------------------------------------
    def produce(self, tp: TP, count: int) -> None:
        log = self.logs.setdefault(tp, [])
        for _ in range(count):
            log.append(ModelMessage(tp[0], tp[1], len(log), b"v%d" % len(log)))

    def rebalance(self, kind: str, partitions: list[TP]) -> None:
        """Queue `assign`, `revoke` or `lost`; it runs inside the next `consume()`."""
        self._rebalances.append((kind, partitions))

    # --- the client's API, as `AIOConsumer` offers it ------------------------------------------
    async def subscribe(self, topics: list[str], **callbacks: Callback) -> None:
        self._callbacks = dict(callbacks)

    async def consume(  # the client's signature
        self,
        num_messages: int,
        timeout: float,  # noqa: ASYNC109
    ) -> list[ModelMessage]:
        self.calls.append("consume")
        while self._rebalances:
            kind, keys = self._rebalances.pop(0)
            parts = [TopicPartition(t, p) for t, p in keys]
            callback = {"assign": "on_assign", "revoke": "on_revoke", "lost": "on_lost"}[kind]
            await self._callbacks[callback](self, parts)
            if kind != "assign":
                self.assignment -= set(keys)
        on_commit = self.config.get("on_commit")
        while self._commit_answers and on_commit is not None:
            error, parts = self._commit_answers.pop(0)
            await on_commit(error, parts)
        out: list[ModelMessage] = []
        for tp in sorted(self.assignment - self.paused_flags):
            log = self.logs.get(tp, [])
            start = self.positions.get(tp, 0)
            taken = log[start : start + num_messages - len(out)]
            out.extend(taken)
            self.positions[tp] = start + len(taken)
        if not out:
            await asyncio.sleep(min(timeout, 0.001))
        self.consumed.set()
        return out

    async def incremental_assign(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            key = (tp.topic, tp.partition)
            self.assignment.add(key)
            committed = self.commits.get(key)
            self.positions[key] = committed[0] if committed else 0

    async def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused_flags |= {(tp.topic, tp.partition) for tp in partitions}

    async def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused_flags -= {(tp.topic, tp.partition) for tp in partitions}

    async def store_offsets(self, offsets: list[TopicPartition]) -> None:
        return None

    async def commit(
        self, offsets: list[TopicPartition], asynchronous: bool = True
    ) -> list[TopicPartition] | None:
        self.calls.append("commit_async" if asynchronous else "commit_sync")
        if not self.is_coordinator_up:
            error = KafkaError(KafkaError._WAIT_COORD)
            if not asynchronous:
                raise KafkaException(error)
            self._commit_answers.append((error, offsets))
            return None
        for tp in offsets:
            self.commits[(tp.topic, tp.partition)] = (tp.offset, tp.metadata or "")
        if asynchronous:
            self._commit_answers.append((None, offsets))
            return None
        return offsets

    async def committed(
        self,
        partitions: list[TopicPartition],
        timeout: float = 10,  # noqa: ASYNC109 (the client's signature)
    ) -> list[TopicPartition]:
        if self.committed_reads_to_fail:
            self.committed_reads_to_fail -= 1
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT))
        out = []
        for tp in partitions:
            offset, metadata = self.commits.get((tp.topic, tp.partition), (-1001, ""))
            out.append(TopicPartition(tp.topic, tp.partition, offset, metadata))
        return out

    async def close(self) -> None:
        self.is_closed = True
