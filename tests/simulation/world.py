"""In-memory models of the consumer's three I/O edges, for the simulation.

- `Group` and `MemberClient`: partitioned logs and one consumer group with cooperative
  revoke-then-assign rebalances, lost partitions, commits with metadata (and a metadata size
  limit), and a client that behaves like librdkafka where the consumer depends on it: rebalance
  callbacks and commit answers are served inside `consume()`; a partition's pause flag survives
  revoke and re-assign; a cooperative assign of nothing still calls `on_assign`.
- `Pinterest` and its `Session`: answers per event, 400s that need bisection, 429s and 5xx,
  timeouts whose request may or may not have been processed.
- `DeadLetterTopic` and its `Producer`: acknowledgements after a delay, retriable errors, and
  records too large to ever be written.
Faults are switched by the scheduler (`run.py`); every random choice comes from its seeded rng.
`tests/test_source.py` drives the source alone against the same client model.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from consumer.errors import TransientError
from consumer.stages.dedup import DedupKey

TP = tuple[str, int]
Callback = Callable[..., Awaitable[None]]
NO_OFFSET = -1001


@dataclass
class Message:
    """The part of `confluent_kafka.Message` the source reads."""

    tp: TP
    position: int
    payload: bytes

    def error(self) -> KafkaError | None:
        return None

    def topic(self) -> str:
        return self.tp[0]

    def partition(self) -> int:
        return self.tp[1]

    def offset(self) -> int:
        return self.position

    def value(self) -> bytes:
        return self.payload

    def key(self) -> bytes | None:
        return None

    def headers(self) -> list[tuple[str, bytes]] | None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return (1, 0)


@dataclass
class Log:
    start: int = 0  # the first offset still kept (truncation moves it)
    messages: dict[int, bytes] = field(default_factory=dict)
    end: int = 0

    def append(self, payload: bytes) -> int:
        offset = self.end
        self.messages[offset] = payload
        self.end += 1
        return offset


class Group:
    """The broker side: logs, the group's members and owners, committed offsets."""

    def __init__(self, rng: random.Random, partitions: list[TP]) -> None:
        self.rng = rng
        self.logs = {tp: Log() for tp in partitions}
        self.committed: dict[TP, tuple[int, str]] = {}
        self.members: list[MemberClient] = []  # joined, in join order
        self.owner: dict[TP, MemberClient | None] = dict.fromkeys(partitions)
        self.metadata_limit = 4096
        self.is_coordinator_up = True
        self.committed_reads_to_fail = 0  # the next this many committed() reads time out
        self.deleted: set[TP] = set()  # topics deleted, not yet created again (`recreate`)
        # The commit a recreated log came back under, and whether reading started at it (inside
        # the new log: Kafka skips what is below) rather than at the log's start.
        self.stale_commits: dict[TP, tuple[int, str]] = {}
        self.started_at_stale: set[TP] = set()
        self.history: list[str] = []  # a short readable trace
        # Who took and let go of each partition when (revoke, loss, close, crash, expiry), and
        # when a commit or a committed() read failed: what the needless re-send check excuses.
        self.ownership: dict[TP, list[tuple[float, str, bool]]] = {tp: [] for tp in partitions}
        self.impeded_at: list[float] = []

    def lose(self, tps: Sequence[TP], member: str) -> None:
        now = asyncio.get_running_loop().time()
        for tp in tps:
            self.ownership.setdefault(tp, []).append((now, member, False))

    def gain(self, tps: Sequence[TP], member: str) -> None:
        now = asyncio.get_running_loop().time()
        for tp in tps:
            self.ownership.setdefault(tp, []).append((now, member, True))

    def owned(self, tp: TP, member: str, at_s: float) -> bool:
        """Whether `member`'s client held `tp` at `at_s`, as far as it had been told."""
        held = False
        for when, name, gained in self.ownership.get(tp, []):
            if when > at_s:
                break
            if name == member:
                held = gained
        return held

    def impede(self) -> None:
        self.impeded_at.append(asyncio.get_running_loop().time())

    def note(self, line: str) -> None:
        self.history.append(line)

    # --- membership and rebalances ----------------------------------------------------------
    def join(self, member: MemberClient) -> None:
        self.members.append(member)
        self.rebalance()

    def leave(self, member: MemberClient) -> None:
        """A member gone (closed, crashed or expired): its partitions have no owner.

        As librdkafka shows it: one rebalance that gives the others nothing new yet (each gets
        an empty assignment), then one that hands out the freed partitions.
        """
        if member in self.members:
            self.members.remove(member)
        freed = False
        for tp, owner in self.owner.items():
            if owner is member:
                self.owner[tp] = None
                freed = True
        if freed:
            for other in self.members:
                other.queue(("assign", []))
            self.rebalance(only_grants=True)
        else:
            self.rebalance()

    def recreate(self, tp: TP) -> None:
        """The topic deleted and created again, or its log cut back by an unclean leader
        election, while the group's committed offset and its map stay: offsets start over.

        librdkafka revokes a partition whose topic disappeared and assigns it again once it is
        back; its committed offset is then past the log's end, so reading starts at the
        earliest offset (auto.offset.reset), below the base of the map (issue 23, defect 3).
        """
        self.deleted.add(tp)
        self.logs[tp] = Log()  # nothing more to fetch
        owner = self.owner[tp]
        if owner is not None and tp not in owner.revoking:
            owner.queue(("revoke", [tp]))  # after an assignment still queued, if there is one
        self.owner[tp] = None  # handed out again once it is back (`restore`)

    def truncate(self, tp: TP, start: int) -> None:
        """Retention deleted the log's oldest records: offsets below `start` are gone, those
        above keep theirs. A position or a committed offset below it starts at `start`
        (`auto.offset.reset=earliest`, as librdkafka does on OFFSET_OUT_OF_RANGE)."""
        log = self.logs[tp]
        for offset in range(log.start, start):
            log.messages.pop(offset, None)
        log.start = max(log.start, start)

    def restore(self, tp: TP) -> None:
        """The topic is back, empty, under the group's old commit."""
        self.logs[tp] = Log()
        self.deleted.discard(tp)
        self.started_at_stale.discard(tp)
        if tp in self.committed:
            self.stale_commits[tp] = self.committed[tp]
        self.assign_free()

    def rebalance(self, only_grants: bool = False) -> None:
        """Cooperative-sticky, in two steps: revoke what moves, then assign what is free.

        Every member hears of the first step (an empty assignment if nothing is new for it);
        the second, once the revokes ran, only reaches members that receive partitions.
        """
        if not self.members:
            return
        share = -(-len(self.owner) // len(self.members))  # ceil
        counts = {id(m): 0 for m in self.members}
        target: dict[TP, MemberClient] = {}
        for tp, owner in sorted(self.owner.items(), reverse=True):  # librdkafka moves the first
            if owner is not None and owner in self.members and counts[id(owner)] < share:
                target[tp] = owner
                counts[id(owner)] += 1
        for tp in sorted(self.owner):
            if tp not in target:
                member = min(self.members, key=lambda m: counts[id(m)])
                target[tp] = member
                counts[id(member)] += 1
        moving = [
            tp for tp, owner in self.owner.items() if owner is not None and owner is not target[tp]
        ]
        for member in self.members:
            revoked = [tp for tp in moving if self.owner[tp] is member]
            if revoked:
                member.queue(("revoke", revoked))
        for tp in moving:
            self.owner[tp] = None  # free once its owner's revoke ran (see `revoked`)
        self._pending_target = target
        self.assign_free(everyone=not only_grants)

    def assign_free(self, everyone: bool = False) -> None:
        """Hand out partitions nobody holds or is still revoking."""
        target = getattr(self, "_pending_target", {})
        grants: dict[int, list[TP]] = {id(m): [] for m in self.members}
        for tp, member in target.items():
            if (
                self.owner[tp] is None
                and tp not in self.deleted
                and member in self.members
                and not any(tp in m.revoking for m in self.members)
            ):
                self.owner[tp] = member
                grants[id(member)].append(tp)
        for member in self.members:
            if everyone or grants[id(member)]:
                member.queue(("assign", grants[id(member)]))

    # --- commits ------------------------------------------------------------------------------
    def commit(self, member: MemberClient, offsets: list[TopicPartition]) -> list[Answer]:
        answered = []
        for tp in offsets:
            key = (tp.topic, tp.partition)
            error = None
            if member not in self.members:
                error = KafkaError(KafkaError.UNKNOWN_MEMBER_ID)
            elif key in self.deleted:
                error = KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART)
            elif len(tp.metadata or "") > self.metadata_limit:
                error = KafkaError(KafkaError.OFFSET_METADATA_TOO_LARGE)
            else:
                self.committed[key] = (tp.offset, tp.metadata or "")
            if error is not None:
                self.impede()
            answered.append(Answer(tp.topic, tp.partition, tp.offset, tp.metadata, error))
        return answered


@dataclass
class Answer:
    """A commit's answer for one partition (librdkafka's TopicPartition with its `error`)."""

    topic: str
    partition: int
    offset: int
    metadata: str | None
    error: KafkaError | None = None


# How many times in a row the source reads committed offsets before it gives up on the map
# (`KafkaSource._committed`); fewer failures than this excuse no re-send.
READ_TRIES = 3


class MemberClient:
    """One process's consumer client (the `AIOConsumer` methods the source calls)."""

    def __init__(self, group: Group, config: dict[str, Any], name: str) -> None:
        self.group = group
        self.config = config
        self.name = name
        self.is_dead = False
        self.is_closing = False
        self.hangs_on_close = False
        self._failed_reads = 0  # committed() reads failed in a row
        self.assignment: set[TP] = set()
        self.revoking: set[TP] = set()
        self.paused_flags: set[TP] = set()  # survives revoke, as in librdkafka
        self.positions: dict[TP, int] = {}
        self._events: list[tuple[str, list[TP]]] = []
        self._commit_answers: list[tuple[KafkaError | None, list[Any]]] = []
        self._callbacks: dict[str, Callback] = {}
        # The app's time between two consume() calls: when it last left one (None while inside
        # one), and the longest gap so far (rebalance callbacks run inside consume()).
        self.left_consume_at: float | None = None
        self.longest_gap_s = 0.0

    def queue(self, event: tuple[str, list[TP]]) -> None:
        if event[0] == "revoke":
            self.revoking |= set(event[1])
        self._events.append(event)

    def _check(self) -> None:
        if self.is_dead:
            raise asyncio.CancelledError("this process crashed")

    async def subscribe(self, topics: list[str], **callbacks: Callback) -> None:
        self._check()
        self._callbacks = dict(callbacks)
        self.group.join(self)

    async def consume(  # the client's signature
        self,
        num_messages: int,
        timeout: float,  # noqa: ASYNC109
    ) -> list[Message]:
        self._check()
        now = asyncio.get_running_loop().time()
        if self.left_consume_at is not None:
            self.longest_gap_s = max(self.longest_gap_s, now - self.left_consume_at)
        self.left_consume_at = None
        await self._serve_events()
        on_commit = self.config.get("on_commit")
        while self._commit_answers and on_commit is not None:
            error, parts = self._commit_answers.pop(0)
            await on_commit(error, parts)
            self._check()
        out: list[Message] = []
        for tp in sorted(self.assignment - self.paused_flags):
            log = self.group.logs[tp]
            position = max(self.positions.get(tp, 0), log.start)
            while position < log.end and len(out) < num_messages:
                out.append(Message(tp, position, log.messages[position]))
                position += 1
            self.positions[tp] = position
        if not out:
            await asyncio.sleep(timeout)
        self.left_consume_at = asyncio.get_running_loop().time()
        return out

    async def _serve_events(self) -> None:
        """Rebalance callbacks run where librdkafka serves its queue: in `consume()` and in
        `close()`."""
        while self._events:
            kind, tps = self._events.pop(0)
            if kind == "lost_all":  # a session expiry loses what is assigned when it is served
                kind, tps = "lost", sorted(self.assignment)
            if kind == "reassign":  # a partition this member holds, assigned to it again
                tps = [tp for tp in tps if tp in self.assignment and tp not in self.revoking]
                self.group.lose(tps, self.name)  # its old generation lets go, as on a loss
                kind = "assign"
            parts = [TopicPartition(t, p) for t, p in tps]
            if kind == "assign":
                self.group.note(f"{self.name} assign {tps}")
                await self._callbacks["on_assign"](self, parts)
                self._check()
                if any(tp not in self.assignment for tp in tps):  # the fallback assign
                    await self.incremental_assign(parts)
                self.group.gain(tps, self.name)
            else:
                self.group.note(f"{self.name} {kind} {tps}")
                self.group.lose(tps, self.name)
                await self._callbacks["on_revoke" if kind == "revoke" else "on_lost"](self, parts)
                self._check()
                self.assignment -= set(tps)
                self.revoking -= set(tps)
                if kind == "revoke":
                    self.group.assign_free()
                elif self not in self.group.members and not self.is_closing:
                    self.group.join(self)  # lost: librdkafka joins again

    async def incremental_assign(self, partitions: list[TopicPartition]) -> None:
        self._check()
        for tp in partitions:
            key = (tp.topic, tp.partition)
            self.assignment.add(key)
            log = self.group.logs[key]
            commit = self.group.committed.get(key, (NO_OFFSET, ""))
            committed = commit[0]
            # auto.offset.reset=earliest: a committed offset outside the log starts at its start
            inside = log.start <= committed <= log.end
            self.positions[key] = committed if inside else log.start
            if inside and commit == self.group.stale_commits.get(key):
                self.group.started_at_stale.add(key)

    async def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused_flags |= {(tp.topic, tp.partition) for tp in partitions}

    async def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused_flags -= {(tp.topic, tp.partition) for tp in partitions}

    async def store_offsets(self, offsets: list[TopicPartition]) -> None:
        self._check()

    async def commit(
        self, offsets: list[TopicPartition], asynchronous: bool = True
    ) -> list[Answer] | None:
        self._check()
        if not self.group.is_coordinator_up:
            self.group.impede()
            if asynchronous:
                self._commit_answers.append((KafkaError(KafkaError._WAIT_COORD), offsets))
                return None
            # librdkafka holds a synchronous commit until a coordinator is known, with no
            # timeout of its own (45 s and more during a broker restart, issue 23 defect 0).
            while not self.group.is_coordinator_up:
                await asyncio.sleep(0.1)
                self._check()
        answered = self.group.commit(self, offsets)
        self.group.note(f"{self.name} commit {[(tp.partition, tp.offset) for tp in offsets]}")
        if asynchronous:
            self._commit_answers.append((None, answered))
            return None
        return answered

    async def committed(
        self,
        partitions: list[TopicPartition],
        timeout: float = 10,  # noqa: ASYNC109 (the client's signature)
    ) -> list[TopicPartition]:
        self._check()
        if self.is_closing:
            # librdkafka does not answer an offset fetch once the group is terminating (seen
            # with a real broker: three 10-s timeouts inside close, issue 23's shutdown defect).
            await asyncio.sleep(timeout)
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT))
        waited_s = 0.0
        while not self.group.is_coordinator_up and waited_s < timeout:
            await asyncio.sleep(0.1)  # an offset fetch needs the coordinator too
            waited_s += 0.1
            self._check()
        if self.group.committed_reads_to_fail or not self.group.is_coordinator_up:
            self.group.committed_reads_to_fail = max(0, self.group.committed_reads_to_fail - 1)
            self._failed_reads += 1
            if self._failed_reads >= READ_TRIES:
                self.group.impede()  # given up: the earlier owner's map is lost, re-sends follow
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT))
        self._failed_reads = 0
        out = []
        for tp in partitions:
            offset, metadata = self.group.committed.get((tp.topic, tp.partition), (NO_OFFSET, ""))
            out.append(TopicPartition(tp.topic, tp.partition, offset, metadata))
        return out

    async def close(self) -> None:
        """librdkafka's close serves the rebalance events still queued (an assignment that
        arrived meanwhile included), revokes the assignment (the callback runs) and leaves."""
        if self.is_dead:
            return
        self.is_closing = True
        if self.hangs_on_close:  # as librdkafka has, mid-rebalance (#4041, #4792)
            # From here the process can commit nothing more: as good as gone for its partitions.
            self.group.lose(sorted(self.assignment), self.name)
            await asyncio.Event().wait()
        await self._serve_events()
        if self.assignment:
            self.group.lose(sorted(self.assignment), self.name)
            parts = [TopicPartition(t, p) for t, p in sorted(self.assignment)]
            self.revoking |= self.assignment
            await self._callbacks["on_revoke"](self, parts)
        self.revoking.clear()
        self.assignment.clear()
        self.is_dead = True
        self.group.leave(self)


# --- Pinterest ----------------------------------------------------------------------------------


@dataclass
class Pinterest:
    """Which events were processed, when; and how the next requests are answered."""

    rng: random.Random
    processed: dict[str, list[float]] = field(default_factory=dict)  # event_id → times
    bad_event_ids: set[str] = field(default_factory=set)  # always refused (per event or 400)
    error_rate: float = 0.0  # 429 / 503 / timeouts
    latency_s: tuple[float, float] = (0.01, 0.2)
    requests: int = 0
    # event_id → (when the request was sent, when its "processed" answer reached the client)
    answered: dict[str, tuple[float, float, str]] = field(default_factory=dict)
    # told of every event sent again after an answer said it was processed:
    # (event_id, client sending it now, (sent, answered, to which client))
    on_resend: Callable[[str, str, tuple[float, float, str]], None] | None = None

    def session(self, loop_time: Callable[[], float], client: str = "") -> Session:
        return Session(self, loop_time, client)


class _Response:
    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
        self.status = status
        self._body = orjson.dumps(body)
        self.headers = headers

    async def read(self) -> bytes:
        return self._body


class _Request:
    def __init__(
        self, pinterest: Pinterest, body: bytes, loop_time: Callable[[], float], client: str
    ) -> None:
        self._pinterest = pinterest
        self._body = body
        self._time = loop_time
        self._client = client

    async def __aenter__(self) -> _Response:
        p = self._pinterest
        p.requests += 1
        events = orjson.loads(self._body)["data"]
        ids = [str(e["event_id"]) for e in events]
        sent_s = self._time()
        if p.on_resend is not None:
            for event_id in ids:
                if event_id in p.answered:
                    p.on_resend(event_id, self._client, p.answered[event_id])
        await asyncio.sleep(p.rng.uniform(*p.latency_s))
        roll = p.rng.random()
        if roll < p.error_rate / 3:
            return _Response(p.rng.choice((429, 503)), {"code": 1, "message": "busy"}, {})
        if roll < p.error_rate * 2 / 3:
            if p.rng.random() < 0.5:  # processed, but the answer never arrived
                self._process(ids)
            await asyncio.sleep(p.rng.uniform(1.0, 5.0))
            raise TimeoutError("request timed out")
        bad = [i for i in ids if i in p.bad_event_ids]
        if bad and len(ids) > 1 and p.rng.random() < 0.5:
            return _Response(400, {"code": 4, "message": "invalid event"}, {})
        statuses = []
        for event_id in ids:
            if event_id in p.bad_event_ids:
                statuses.append({"status": "failed", "error_message": "bad", "warning_message": ""})
            else:
                statuses.append({"status": "processed", "error_message": "", "warning_message": ""})
        self._process([i for i in ids if i not in p.bad_event_ids])
        for event_id in ids:
            if event_id not in p.bad_event_ids:
                p.answered[event_id] = (sent_s, self._time(), self._client)
        body = {
            "num_events_received": len(ids),
            "num_events_processed": len(ids) - len(bad),
            "events": statuses,
        }
        return _Response(200, body, {"x-pinterest-rid": f"r{p.requests}"})

    def _process(self, ids: list[str]) -> None:
        now = self._time()
        for event_id in ids:
            self._pinterest.processed.setdefault(event_id, []).append(now)

    async def __aexit__(self, *_: object) -> None:
        return None


class Session:
    """The `aiohttp.ClientSession` methods delivery uses."""

    def __init__(self, pinterest: Pinterest, loop_time: Callable[[], float], client: str) -> None:
        self._pinterest = pinterest
        self._time = loop_time
        self._client = client

    def post(self, url: str, data: bytes, headers: dict[str, str]) -> _Request:
        return _Request(self._pinterest, data, self._time, self._client)

    async def close(self) -> None:
        return None


# --- Redis, the shared dedup store -------------------------------------------------------------


@dataclass
class Redis:
    """The keys every member's store shares; down, claims fail as the real store's do."""

    seen: set[int] = field(default_factory=set)
    is_down: bool = False

    def store(self) -> SharedDedupStore:
        return SharedDedupStore(self)


class SharedDedupStore:
    """`RedisDedupStore`'s behaviour: seen keys shared, in-flight claims the process's own, a
    claim fails with `TransientError` while Redis is down, a lost confirm costs a re-send."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._in_flight: set[int] = set()

    async def claim_many(self, keys: Sequence[DedupKey]) -> list[bool]:
        if self._redis.is_down:
            raise TransientError("redis unavailable: ConnectionError")
        out = []
        for key in keys:
            is_new = (
                key.fingerprint not in self._redis.seen and key.fingerprint not in self._in_flight
            )
            if is_new:
                self._in_flight.add(key.fingerprint)
            out.append(is_new)
        return out

    async def confirm_many(self, keys: Sequence[DedupKey]) -> None:
        for key in keys:
            self._in_flight.discard(key.fingerprint)
            if not self._redis.is_down:
                self._redis.seen.add(key.fingerprint)

    def release_many(self, keys: Sequence[DedupKey]) -> None:
        for key in keys:
            self._in_flight.discard(key.fingerprint)

    async def close(self) -> None:
        return None


# --- the dead-letter topic ----------------------------------------------------------------------


@dataclass
class DeadLetterTopic:
    rng: random.Random
    written: dict[tuple[str, int, int], str] = field(default_factory=dict)  # coords → reason
    error_rate: float = 0.0  # retriable errors
    is_slow: bool = False  # acknowledgements take seconds (a broker under load, acks=all)
    max_bytes: int = 1_000_000  # the producer's message.max.bytes
    # Per letter (its record's coordinates and the event it names, if any): when it was written,
    # when its acknowledgement reached a live member, and which member.
    acked: dict[tuple[str, int, int, str], tuple[float, float, str]] = field(default_factory=dict)
    on_rewrite: (
        Callable[[tuple[str, int, int, str], str, tuple[float, float, str]], None] | None
    ) = None  # told when a letter acknowledged to a member is written again

    def producer(self, loop: asyncio.AbstractEventLoop, name: str = "") -> Producer:
        return Producer(self, loop, name)


class Producer:
    def __init__(self, topic: DeadLetterTopic, loop: asyncio.AbstractEventLoop, name: str) -> None:
        self._topic = topic
        self._loop = loop
        self.name = name
        self.is_dead = False
        self.pending = 0  # written, not yet acknowledged
        self.flush_gave_up = False  # close() returned with letters still pending
        self._flushed = asyncio.Event()

    def produce(
        self,
        topic: str,
        value: bytes,
        key: bytes | None,
        headers: list[tuple[str, str | bytes | None]],
        on_delivery: Callable[[KafkaError | None, Any], None],
    ) -> None:
        model = self._topic
        size = len(value) + sum(len(k) + len(v or b"") for k, v in headers)
        if size > model.max_bytes:
            self._loop.call_soon(on_delivery, KafkaError(KafkaError.MSG_SIZE_TOO_LARGE), None)
            return
        delay = model.rng.uniform(1.0, 6.0) if model.is_slow else model.rng.uniform(0.005, 0.05)
        is_error = model.rng.random() < model.error_rate
        found = {k: v for k, v in headers}

        def text(name: str) -> str:
            raw = found.get(name)
            return raw.decode() if isinstance(raw, bytes) else str(raw)

        coords = (
            text("capi.original.topic"),
            int(text("capi.original.partition")),
            int(text("capi.original.offset")),
        )
        letter = (*coords, text("capi.event_id") if "capi.event_id" in found else "")
        written_s = self._loop.time()
        if letter in model.acked and model.on_rewrite is not None:
            model.on_rewrite(letter, self.name, model.acked[letter])
        self.pending += 1

        def ack() -> None:
            self.pending -= 1
            if not self.pending:
                self._flushed.set()
            if not is_error:  # Kafka has it, whether or not the process lives to hear so
                model.written[coords] = text("capi.reason")
            if self.is_dead:
                return
            if not is_error:
                model.acked.setdefault(letter, (written_s, self._loop.time(), self.name))
            on_delivery(KafkaError(KafkaError._MSG_TIMED_OUT) if is_error else None, None)

        self._loop.call_later(delay, ack)

    async def close(self) -> None:
        """librdkafka's flush: acknowledgements of what is pending arrive before it returns."""
        if self.pending:
            self._flushed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flushed.wait(), 5.0)
        self.flush_gave_up = self.pending > 0
