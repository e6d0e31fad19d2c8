"""Owns the Kafka consumer: batch `consume()`, pause/resume on backpressure, rebalances, commits.

The only module that talks to the consumer client. Envelopes go to `handler`, which returns how
many it accepted; the rest are held in order, every assigned partition is paused, and `consume()`
keeps being called so group membership and rebalance callbacks stay alive. Offsets are stored and
committed only as the ledger's owner says: `commit_soon` between two `consume()` calls (never
blocks), `commit_now` inside a revoke and at shutdown (blocks until Kafka answered).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import orjson
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.aio import AIOConsumer

from consumer.errors import TransientError, backoff_s
from consumer.records import Commit, Coordinates, Envelope
from consumer.records import TopicPartition as TP
from consumer.stages.commits import Commits

logger = logging.getLogger(__name__)

ClientFactory = Callable[[dict[str, Any]], Any]
T = TypeVar("T")


class _Stopped(Exception):
    """`stop` was set while the source waited on Kafka."""


class SourceOwner(Protocol):
    """What the source calls on its owner (the pipeline): always from the source's own loop,
    between two `consume()` calls or inside one (rebalances and commit answers arrive there)."""

    async def handle(self, envelopes: list[Envelope]) -> int:
        """Take the leading envelopes it can and return how many; the source holds the rest,
        in order, pauses every partition, and offers them again on its next turn."""
        ...

    async def commit_due(self) -> None:
        """A commit interval passed: commit what became final (`commit_soon`, never blocks)."""
        ...

    async def on_assign(self, partitions: list[tuple[TP, int, Commit | None]]) -> None:
        """New partitions: (partition, its generation, the group's last commit there)."""
        ...

    async def on_revoke(self, partitions: list[TP]) -> None:
        """Drain and commit these (`commit_now`): they are ours until this returns."""
        ...

    async def on_lost(self, partitions: list[TP]) -> None:
        """Gone already (a session expired): forget them; nothing of theirs may be committed."""
        ...

    def on_committed(self, committed: dict[TP, Commit]) -> None:
        """Kafka accepted these commits."""
        ...


@dataclass(frozen=True, slots=True)
class SourceSettings:
    batch_size: int = 1000  # messages per consume()
    commit_interval_s: float = 0.1  # how often `commit_due` is called
    poll_timeout_s: float = 0.1  # how long consume() waits when nothing is there


# librdkafka's codes for "no broker answers" (statistics report when one is UP again).
_UNREACHABLE = frozenset({KafkaError._ALL_BROKERS_DOWN, KafkaError._RESOLVE})


def _offset(stats: dict[str, Any], name: str) -> int | None:
    value = stats.get(name)
    return value if isinstance(value, int) and value >= 0 else None


def partition_lag(stats: dict[str, Any]) -> int | None:
    """Messages behind the high watermark, from one partition of librdkafka's statistics.

    librdkafka counts from the committed offset and says -1 until there is one, which would hide
    the lag of a new group; then count from the position (the first fetch's start) instead.
    """
    lag = stats.get("consumer_lag")
    if isinstance(lag, int) and lag >= 0:
        return lag
    high = _offset(stats, "hi_offset")
    start = _offset(stats, "committed_offset")
    if start is None:
        start = _offset(stats, "app_offset")
    if start is None:
        start = _offset(stats, "lo_offset")
    return max(0, high - start) if high is not None and start is not None else None


class KafkaSource:
    def __init__(
        self,
        config: dict[str, Any],
        topics: Sequence[str],
        owner: SourceOwner,
        settings: SourceSettings = SourceSettings(),
        clock: Callable[[], float] | None = None,
        client_factory: ClientFactory | None = None,
    ) -> None:
        clock = clock or time.monotonic  # read at construction (the simulation patches it)
        self._config = {
            **config,
            "enable.auto.offset.store": False,
            "enable.auto.commit": False,
            "partition.assignment.strategy": "cooperative-sticky",
        }
        self._config.setdefault("statistics.interval.ms", 5000)
        self._topics = list(topics)
        self._owner = owner
        self.commit_interval_s = settings.commit_interval_s
        self._next_commit_s = clock() + settings.commit_interval_s
        self._client_factory = client_factory or (lambda c: AIOConsumer(c, max_workers=4))
        self.commits = Commits(clock)
        self.batch_size = settings.batch_size
        self.poll_timeout_s = settings.poll_timeout_s
        self._clock = clock
        self._consumer: AIOConsumer | None = None
        self._stop: asyncio.Event | None = None
        self._held: list[Envelope] = []
        self._retry_at_s = 0.0
        self._transient_failures = 0
        self._rng = random.Random()
        self.generations: dict[TP, int] = {}
        self.assigned: set[TP] = set()
        self.paused: set[TP] = set()
        self.lag: dict[TP, int] = {}
        self.last_turn_s = clock()
        self.consumed = 0
        self._error_logged_at: dict[int, float] = {}
        # What readiness is made of (health.assess): each condition with the time it began.
        self.broker_down_since: float | None = None
        self.missing_topics: set[str] = set()
        self.is_joined = False
        self.is_closing = False
        self.close_abandoned = False
        self.transient_since: float | None = None
        self.transient_error = ""
        self.all_paused_since: float | None = None
        # Since when partitions were lost with nothing assigned back: no rebalance took them.
        self.lost_since: float | None = None

    @property
    def client(self) -> AIOConsumer:
        assert self._consumer is not None, "start() first"
        return self._consumer

    async def start(self) -> None:
        """Create the consumer (needs the running loop) and subscribe."""
        config = dict(self._config)
        config["stats_cb"] = self._on_stats
        config["error_cb"] = self._on_error
        config["on_commit"] = self._on_commit
        self._consumer = self._client_factory(config)
        await self._consumer.subscribe(
            self._topics, on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._lost
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set. Never awaits a full stage: backpressure pauses instead.

        Periodic commits run here, between two `consume()` calls, never beside one: a commit
        queued behind a `consume()` that revokes partitions would otherwise land after the
        revoke's own final commit and move those partitions' offsets back.
        """
        consumer = self.client
        self._stop = stop
        while not stop.is_set():
            self.last_turn_s = self._clock()
            if self.last_turn_s >= self._next_commit_s:
                self._next_commit_s = self.last_turn_s + self.commit_interval_s
                await self._owner.commit_due()
            if self._held and self._clock() >= self._retry_at_s:
                held, self._held = self._held, []
                await self._offer(held)
            if not self._held and (self.paused or self.all_paused_since is not None):
                # Nothing held means nothing paused by us, however the held records went:
                # accepted, or dropped by a revoke or a loss of their partitions.
                await self._resume_all()
            timeout = 0.05 if self._held else self.poll_timeout_s
            messages = await consumer.consume(self.batch_size, timeout)
            envelopes = self._envelopes(messages)
            if not envelopes:
                continue
            self.consumed += len(envelopes)
            if self._held:
                self._held.extend(envelopes)
            else:
                await self._offer(envelopes)

    async def _offer(self, envelopes: list[Envelope]) -> None:
        try:
            accepted = await self._owner.handle(envelopes)
            self._transient_failures = 0
            self.transient_since = None
        except TransientError as exc:
            accepted = 0
            self._transient_failures += 1
            if self.transient_since is None:
                self.transient_since = self._clock()
            self.transient_error = str(exc)
            delay = backoff_s(self._transient_failures, 0.5, 30.0, self._rng, exc.retry_after_s)
            self._retry_at_s = self._clock() + delay
            logger.warning(
                "transient failure, holding records",
                extra={"error": str(exc), "retry_in_s": delay, "held": len(envelopes)},
            )
        if accepted < len(envelopes):
            self._held = envelopes[accepted:] + self._held
            await self._pause_all()

    def _envelopes(self, messages: list[Any]) -> list[Envelope]:
        envelopes = []
        now = self._clock()
        last_topic, last_partition, generation = None, None, None
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    if error.fatal():
                        raise KafkaException(error)
                    if error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART and message.topic():
                        self.missing_topics.add(message.topic())
                    logger.warning("consume error", extra={"error": error.str()})
                continue
            topic, partition = message.topic(), message.partition()
            if partition != last_partition or topic != last_topic:  # a chunk comes in runs
                last_topic, last_partition = topic, partition
                # Not assigned: assigned after the signal and not taken (`_assign_unconsumed`),
                # or already revoked; whoever owns it reads it from the group's commit.
                generation = (
                    self.generations.get((topic, partition), 0)
                    if (topic, partition) in self.assigned
                    else None
                )
            if generation is None:
                continue
            headers = message.headers()
            traceparent = None
            header_tuple: tuple[tuple[str, bytes], ...] = ()
            if headers:
                header_tuple = tuple((k, v or b"") for k, v in headers)
                for key, value in header_tuple:
                    if key == "traceparent":
                        traceparent = value.decode("ascii", "replace")
            envelopes.append(  # positional: keywords made this __init__ 2.5x dearer
                Envelope(
                    Coordinates(topic, partition, message.offset()),
                    message.value() or b"",  # value
                    message.key(),
                    header_tuple,  # headers
                    message.timestamp()[1],  # timestamp_ms
                    traceparent,
                    generation,
                    now,  # consumed_at_s
                )
            )
        return envelopes

    async def _pause_all(self) -> None:
        to_pause = self.assigned - self.paused
        if to_pause:
            await self.client.pause([TopicPartition(t, p) for t, p in to_pause])
            self.paused |= to_pause
            logger.info("paused partitions", extra={"count": len(to_pause)})
        if self.assigned and self.all_paused_since is None:
            self.all_paused_since = self._clock()

    async def _resume_all(self) -> None:
        if self.paused:
            await self.client.resume([TopicPartition(t, p) for t, p in self.paused])
            logger.info("resumed partitions", extra={"count": len(self.paused)})
            self.paused.clear()
        self.all_paused_since = None

    @property
    def commits_in_flight(self) -> set[TP]:
        return self.commits.in_flight

    @property
    def commit_failures(self) -> int:
        return self.commits.failures

    @property
    def metadata_refusals(self) -> int:
        return self.commits.metadata_refusals

    async def commit_soon(self, commits: dict[TP, Commit]) -> None:
        """Commit without waiting, between two `consume()` calls (`Commits.send_soon`)."""
        await self.commits.send_soon(self.client, self._owned(commits))

    async def _on_commit(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        """Kafka's answer to an asynchronous commit (served by `consume()`, on the loop)."""
        committed = self.commits.answered(error, partitions)
        if committed:
            self._owner.on_committed(committed)

    async def commit_now(self, commits: dict[TP, Commit]) -> dict[TP, Commit]:
        """Commit and wait: inside a revoke and at shutdown only (`Commits.send_now`)."""
        return await self.commits.send_now(self.client, self._owned(commits))

    def _owned(self, commits: dict[TP, Commit]) -> dict[TP, Commit]:
        return {tp: c for tp, c in commits.items() if tp in self.assigned}

    async def _committed(self, partitions: list[TopicPartition]) -> dict[TP, Commit] | None:
        """The group's last commit per partition, with its metadata; {} when it cannot be read
        after three tries (then nothing is skipped and the earlier owner's map is overwritten:
        its marked offsets are sent again, never lost; the map only saves re-sends). None when
        `stop` was set meanwhile: each try waits up to 10 s (without a group coordinator, every
        one of them), longer than what is left of the grace period."""
        if not partitions:
            return {}  # an empty assignment (every member hears of each rebalance)
        try:
            for attempt in range(3):
                try:
                    answered = await self._unless_stopped(
                        self.client.committed(partitions, timeout=10)
                    )
                    break
                except KafkaException as exc:
                    logger.warning(
                        "could not read committed offsets",
                        extra={"error": str(exc), "attempt": attempt + 1},
                    )
                    await self._unless_stopped(asyncio.sleep(0.5 * (attempt + 1)))
            else:
                return {}
        except _Stopped:
            return None
        return {
            (tp.topic, tp.partition): Commit(tp.offset, tp.metadata or "")
            for tp in answered or []
            if tp.error is None and tp.offset >= 0
        }

    async def _unless_stopped(self, awaitable: Awaitable[T]) -> T:
        """`awaitable`'s result, or `_Stopped` as soon as `stop` is set."""
        work = asyncio.ensure_future(awaitable)
        if self._stop is None:
            return await work
        stopped = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({work, stopped}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            work.cancel()
            raise
        finally:
            stopped.cancel()
        if not work.done():
            work.cancel()
            raise _Stopped
        return work.result()

    async def _assign_unconsumed(self, partitions: list[TopicPartition]) -> None:
        """Assign without taking: a rebalance that finished after the signal, in the last turn
        or while `close()` leaves the group. Nothing of these is consumed before close revokes
        them, and reading their commits could outlast the grace period (librdkafka answers no
        offset fetch once closing, nor without a group coordinator)."""
        await self.client.incremental_assign(partitions)
        logger.info(
            "partitions assigned while stopping: not consumed",
            extra={"partitions": [f"{tp.topic}/{tp.partition}" for tp in partitions]},
        )

    async def _assigned(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        # A rebalance callback is the source's work too, and each is bounded (here three
        # committed() reads of 10 s at most); several may be served inside one consume(), so
        # each counts as a turn for liveness (found by the simulation, seed 12038020: two
        # assignments without a coordinator made 63 s inside one consume()).
        self.last_turn_s = self._clock()
        if again := [tp for tp in partitions if (tp.topic, tp.partition) in self.assigned]:
            # Not something librdkafka should do; if it does, reading starts over from the
            # group's commit. Whatever the old assignment holds is let go as on a loss (never
            # committed, sent again under the new one), rather than tracked twice (issue 23).
            logger.error(
                "partitions assigned again while still held: taken as lost first",
                extra={"partitions": [f"{tp.topic}/{tp.partition}" for tp in again]},
            )
            await self._lost(_consumer, again)
        if self.is_closing or (self._stop is not None and self._stop.is_set()):
            await self._assign_unconsumed(partitions)
            return
        committed = await self._committed(partitions)
        if committed is None:
            await self._assign_unconsumed(partitions)
            return
        self.is_joined = True
        self.lost_since = None  # a rebalance completed, even one that gave us nothing
        assigned = []
        for tp in partitions:
            key = (tp.topic, tp.partition)
            self.missing_topics.discard(tp.topic)
            self.generations[key] = self.generations.get(key, 0) + 1
            self.assigned.add(key)
            assigned.append((key, self.generations[key], committed.get(key)))
        await self._owner.on_assign(assigned)
        await self.client.incremental_assign(partitions)
        if self._held:
            # Cooperative-sticky does not carry our pause to new partitions: assign, then pause.
            await self._pause_all()
        elif partitions:
            # librdkafka keeps a partition's pause flag across revoke and re-assign (librdkafka
            # #1849): one paused before it went away would come back paused, and nobody would
            # ever resume it. Resume what we do not mean to pause, whatever the client remembers.
            await self.client.resume(partitions)
        names = [f"{t}/{p}" for (t, p), _, _ in assigned]
        logger.info("partitions assigned", extra={"partitions": names})

    def _forget(self, partitions: list[TopicPartition]) -> list[TP]:
        keys = [(tp.topic, tp.partition) for tp in partitions]
        gone = set(keys)
        self._held = [e for e in self._held if e.coords.topic_partition not in gone]
        self.assigned -= gone
        self.paused -= gone
        for key in keys:
            self.lag.pop(key, None)
            self.commits.forget(key)
        return keys

    async def _revoked(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        self.last_turn_s = self._clock()  # bounded: drain and commit, CAPI_REVOKE_TIMEOUT_S each
        keys = [(tp.topic, tp.partition) for tp in partitions]
        await self._owner.on_revoke(keys)  # drains and commits while we still own them
        self._forget(partitions)
        logger.info("partitions revoked", extra={"partitions": [f"{t}/{p}" for t, p in keys]})

    async def _lost(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        keys = self._forget(partitions)
        if not self.assigned and self.lost_since is None:
            self.lost_since = self._clock()
        await self._owner.on_lost(keys)
        logger.warning("partitions lost", extra={"partitions": [f"{t}/{p}" for t, p in keys]})

    async def _on_stats(self, stats_json: str) -> None:
        try:
            stats = orjson.loads(stats_json)
        except orjson.JSONDecodeError:
            return
        brokers = (stats.get("brokers") or {}).values()
        if any(isinstance(b, dict) and b.get("state") == "UP" for b in brokers):
            self.broker_down_since = None
        group = stats.get("cgrp")
        if isinstance(group, dict) and "join_state" in group:
            self.is_joined = group.get("join_state") == "steady"
        for topic, topic_stats in (stats.get("topics") or {}).items():
            for partition, p in (topic_stats.get("partitions") or {}).items():
                key = (topic, int(partition))
                if key in self.assigned and (lag := partition_lag(p)) is not None:
                    self.lag[key] = lag

    async def _on_error(self, error: KafkaError) -> None:
        # librdkafka reports a refused connection on every reconnect attempt (~20/s while a
        # broker is down): log each error code at most every 10 s.
        now = self._clock()
        code = error.code()
        if code in _UNREACHABLE and self.broker_down_since is None:
            self.broker_down_since = now
        if error.fatal() or now - self._error_logged_at.get(code, -1e9) >= 10.0:
            self._error_logged_at[code] = now
            logger.warning(
                "kafka client error", extra={"error": error.str(), "fatal": error.fatal()}
            )

    async def close(self, timeout_s: float = 10.0) -> None:
        """Leave the group: librdkafka revokes what we hold (`on_revoke` drains and commits).

        Gives up after `timeout_s`: librdkafka has hung in close during a rebalance before
        (librdkafka #4041, #4792), and the pod's grace period is finite. What was final is
        committed by then (the drain commits first); the rest is sent again by the next
        owner. The close goes on in its worker thread, which interpreter exit would wait for
        without bound: `close_abandoned` tells the caller to exit at once instead.
        """
        if self._consumer is None:
            return
        self.is_closing = True
        closing = asyncio.ensure_future(self._consumer.close())
        done, _ = await asyncio.wait({closing}, timeout=timeout_s)
        if not done:
            self.close_abandoned = True
            logger.error(
                "the Kafka consumer did not close in time; exiting without leaving the group "
                "(it notices after session.timeout.ms)",
                extra={"timeout_s": timeout_s},
            )
            return
        closing.result()
        self._consumer = None

    @property
    def held(self) -> int:
        return len(self._held)
