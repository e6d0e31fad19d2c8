from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from consumer.records import Commit, Coordinates, Envelope
from consumer.records import TopicPartition as TP
from consumer.stages.source import KafkaSource, SourceSettings, partition_lag
from tests.simulation.world import Group, Log, MemberClient, Message


@pytest.mark.parametrize(("stats", "lag"), [
    ({"consumer_lag": 12, "hi_offset": 100, "committed_offset": 88}, 12),
    # a group that never committed: librdkafka says -1; the position counts instead
    ({"consumer_lag": -1, "hi_offset": 100, "committed_offset": -1001, "app_offset": 40}, 60),
    # before the first message was handed over: from the start of the log
    ({"consumer_lag": -1, "hi_offset": 100, "committed_offset": -1001, "app_offset": -1001,
      "lo_offset": 0}, 100),
    ({"consumer_lag": -1, "hi_offset": -1, "committed_offset": -1001}, None),  # nothing known
    ({}, None),
])  # fmt: skip
def test_partition_lag_from_statistics_also_for_a_new_group(
    stats: dict[str, int], lag: int | None
) -> None:
    assert partition_lag(stats) == lag


# --- the source against the simulation's client model (tests/simulation/world.py) ------------

A0, A1 = ("orders", 0), ("orders", 1)


class Client(MemberClient):
    """The model client of one member, with the test's hands on the world around it."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(Group(random.Random(0), []), config, "m")
        self.calls: list[str] = []
        self.consumed = asyncio.Event()  # set after every consume() call
        self.reading = asyncio.Event()  # set when a committed() read begins

    def rebalance(self, kind: str, partitions: list[TP]) -> None:
        """Queue `assign`, `revoke` or `lost`; it runs inside the next `consume()`."""
        for tp in partitions:
            self.group.logs.setdefault(tp, Log())
        self.queue((kind, partitions))

    def produce(self, tp: TP, count: int) -> None:
        log = self.group.logs.setdefault(tp, Log())
        for _ in range(count):
            log.append(b"v")

    @property
    def commits(self) -> dict[TP, tuple[int, str]]:
        return self.group.committed

    async def consume(  # the client's signature
        self,
        num_messages: int,
        timeout: float,  # noqa: ASYNC109
    ) -> list[Message]:
        self.calls.append("consume")
        try:
            return await super().consume(num_messages, min(timeout, 0.001))
        finally:
            self.consumed.set()

    async def commit(self, offsets: list[Any], asynchronous: bool = True) -> Any:
        self.calls.append("commit_async" if asynchronous else "commit_sync")
        return await super().commit(offsets, asynchronous)

    async def committed(self, partitions: list[Any], timeout: float = 10) -> Any:  # noqa: ASYNC109
        self.calls.append("committed")
        self.reading.set()
        return await super().committed(partitions, timeout)


class Harness:
    """A `KafkaSource` on the model, owned by this harness (a `SourceOwner` whose acceptance
    the test decides)."""

    def __init__(self) -> None:
        self.models: list[Client] = []
        self.accept: int | None = None  # None: take everything offered
        self.taken: list[Envelope] = []
        self.committed: dict[TP, Commit] = {}
        self.events: list[tuple[str, list[TP]]] = []
        self.assigned_commits: dict[TP, Commit | None] = {}
        self.source = KafkaSource(
            {"group.id": "g"},
            ["orders"],
            self,
            SourceSettings(commit_interval_s=0.0),
            client_factory=self._client,
        )
        self.to_commit: dict[TP, Commit] = {}

    def _client(self, config: dict[str, Any]) -> Client:
        self.models.append(Client(config))
        return self.models[-1]

    @property
    def model(self) -> Client:
        return self.models[-1]

    async def handle(self, envelopes: list[Envelope]) -> int:
        count = len(envelopes) if self.accept is None else min(self.accept, len(envelopes))
        self.taken.extend(envelopes[:count])
        if self.accept is not None:
            self.accept -= count
        return count

    async def commit_due(self) -> None:
        if self.to_commit:
            await self.source.commit_soon(self.to_commit)

    def on_committed(self, committed: dict[TP, Commit]) -> None:
        self.committed.update(committed)

    async def on_assign(self, partitions: list[tuple[TP, int, Commit | None]]) -> None:
        self.events.append(("assign", [tp for tp, _, _ in partitions]))
        self.assigned_commits.update({tp: c for tp, _, c in partitions})

    async def on_revoke(self, partitions: list[TP]) -> None:
        self.events.append(("revoke", partitions))

    async def on_lost(self, partitions: list[TP]) -> None:
        self.events.append(("lost", partitions))

    async def turns(self, count: int) -> None:
        """Run the source loop for `count` consume() calls."""
        stop = asyncio.Event()
        model = self.model
        start = model.calls.count("consume")
        task = asyncio.create_task(self.source.run(stop))
        while model.calls.count("consume") < start + count and not task.done():
            model.consumed.clear()
            await model.consumed.wait()
        stop.set()
        await task


async def started() -> Harness:
    harness = Harness()
    await harness.source.start()
    return harness


async def test_source_commit_soon_never_waits_for_an_absent_coordinator() -> None:
    harness = await started()
    harness.model.rebalance("assign", [A0])
    await harness.turns(1)
    harness.model.group.is_coordinator_up = False
    harness.to_commit = {A0: Commit(5)}
    await harness.turns(3)
    assert "commit_sync" not in harness.model.calls
    assert harness.committed == {}  # answered with an error: nothing marked
    assert harness.source.commit_failures >= 1
    harness.model.group.is_coordinator_up = True
    await harness.turns(3)
    assert harness.committed == {A0: Commit(5)}
    assert harness.model.commits[A0] == (5, "")


async def test_source_commit_soon_sends_one_commit_per_partition_until_answered() -> None:
    harness = await started()
    harness.model.rebalance("assign", [A0])
    await harness.turns(1)
    await harness.source.commit_soon({A0: Commit(3)})
    assert harness.source.commits_in_flight == {A0}
    await harness.turns(1)  # the answer is served by consume()
    assert harness.source.commits_in_flight == set()
    assert harness.committed == {A0: Commit(3)}


async def test_source_answer_after_revoke_marks_nothing() -> None:
    harness = await started()
    harness.model.rebalance("assign", [A0])
    await harness.turns(1)
    await harness.source.commit_soon({A0: Commit(3)})
    harness.model.rebalance("revoke", [A0])
    await harness.turns(2)
    assert harness.committed == {}
    assert harness.source.commits_in_flight == set()


async def test_source_commit_now_is_synchronous_and_supersedes_one_in_flight() -> None:
    harness = await started()
    harness.model.rebalance("assign", [A0])
    await harness.turns(1)
    await harness.source.commit_soon({A0: Commit(3)})
    assert await harness.source.commit_now({A0: Commit(4, "m")}) == {A0: Commit(4, "m")}
    assert harness.source.commits_in_flight == set()
    await harness.turns(1)  # the older asynchronous answer arrives: ignored
    assert harness.committed == {}
    assert harness.model.commits[A0] == (4, "m")


async def test_source_lost_without_reassign_is_reported_until_a_rebalance_completes() -> None:
    harness = await started()
    harness.model.rebalance("assign", [A0, A1])
    await harness.turns(1)
    assert harness.source.lost_since is None
    harness.model.rebalance("lost", [A0, A1])
    await harness.turns(1)
    assert harness.source.lost_since is not None
    harness.model.rebalance("assign", [])  # a completed rebalance that gave us nothing
    await harness.turns(1)
    assert harness.source.lost_since is None


async def test_source_backpressure_pauses_and_resumes_when_accepted() -> None:
    harness = await started()
    harness.model.produce(A0, 5)
    harness.model.rebalance("assign", [A0])
    harness.accept = 2
    await harness.turns(2)
    assert harness.source.paused == {A0} and harness.model.paused_flags == {A0}
    assert harness.source.held == 3
    harness.accept = None
    await harness.turns(3)
    assert [e.coords.offset for e in harness.taken] == [0, 1, 2, 3, 4]
    assert harness.source.paused == set() and harness.model.paused_flags == set()


async def test_source_revoke_of_every_held_record_resumes_the_other_partitions() -> None:
    """Defect 1 of issue 23: the held records went with a revoke, the rest stayed paused."""
    harness = await started()
    harness.model.produce(A0, 3)
    harness.model.rebalance("assign", [A0, A1])
    harness.accept = 0
    await harness.turns(2)
    assert harness.source.paused == {A0, A1} and harness.source.held == 3
    harness.model.rebalance("revoke", [A0])
    await harness.turns(1)
    harness.model.produce(A1, 2)
    harness.accept = None
    await harness.turns(3)
    assert harness.source.held == 0
    assert harness.source.paused == set()
    assert harness.model.paused_flags & harness.model.assignment == set()
    assert [e.coords for e in harness.taken] == [Coordinates(*A1, 0), Coordinates(*A1, 1)]
    assert harness.source.all_paused_since is None


async def test_source_partition_paused_revoked_and_assigned_back_is_resumed() -> None:
    """Defect 6 of issue 23: the client remembers a pause across revoke and re-assign."""
    harness = await started()
    harness.model.produce(A0, 3)
    harness.model.rebalance("assign", [A0])
    harness.accept = 0
    await harness.turns(2)
    assert harness.model.paused_flags == {A0}
    harness.model.rebalance("revoke", [A0])  # takes the held records with it
    await harness.turns(1)
    harness.model.rebalance("assign", [A0])
    harness.accept = None
    await harness.turns(3)
    assert harness.model.paused_flags == set()
    assert [e.coords.offset for e in harness.taken] == [0, 1, 2]


async def test_source_partitions_assigned_while_holding_are_paused() -> None:
    harness = await started()
    harness.model.produce(A0, 3)
    harness.model.rebalance("assign", [A0])
    harness.accept = 0
    await harness.turns(2)
    harness.model.produce(A1, 3)
    harness.model.rebalance("assign", [A1])
    await harness.turns(2)
    assert harness.model.paused_flags == {A0, A1}
    assert [tp for kind, tps in harness.events if kind == "assign" for tp in tps] == [A0, A1]


async def test_source_a_failed_committed_read_is_tried_again_before_assigning() -> None:
    """Issue 23, defect 7: one failed read dropped the earlier owner's map of final offsets."""
    harness = await started()
    harness.model.commits[A0] = (7, "capi1:7:map")
    harness.model.group.committed_reads_to_fail = 2
    harness.model.rebalance("assign", [A0])
    await harness.turns(1)
    assert harness.assigned_commits == {A0: Commit(7, "capi1:7:map")}


async def test_source_counts_commits_refused_for_the_size_of_their_metadata() -> None:
    """Issue 23, defect 5: the pipeline shortens the map when this count moves."""
    harness = await started()
    harness.model.group.metadata_limit = 10
    harness.model.rebalance("assign", [A0])
    await harness.turns(1)
    await harness.source.commit_soon({A0: Commit(3, "capi1:3:r" + "A" * 40)})
    await harness.turns(1)
    assert harness.source.metadata_refusals == 1 and harness.committed == {}
    await harness.source.commit_soon({A0: Commit(3)})
    await harness.turns(1)
    assert harness.committed == {A0: Commit(3)}


async def test_source_an_empty_assignment_reads_no_committed_offsets() -> None:
    harness = await started()
    harness.model.rebalance("assign", [])
    await harness.turns(1)
    assert "committed" not in harness.model.calls
    assert harness.events and all(e == ("assign", []) for e in harness.events)


async def test_source_an_assignment_served_by_close_is_not_taken_and_close_is_prompt() -> None:
    """A rebalance that finished while close() left the group: librdkafka answers no offset
    fetch by then, and three 10-s reads outlived the pod's grace period (seen in CI)."""
    harness = await started()
    harness.model.rebalance("assign", [A0])
    await harness.turns(1)
    harness.model.rebalance("assign", [])
    harness.model.rebalance("assign", [A1])
    await asyncio.wait_for(harness.source.close(), 2)
    assert harness.model.calls.count("committed") == 1  # the first assignment's read only
    assert [tp for kind, tps in harness.events if kind == "assign" for tp in tps] == [A0]
    assert not harness.source.close_abandoned


async def test_source_close_gives_up_on_a_client_that_hangs() -> None:
    harness = await started()
    harness.model.rebalance("assign", [A0])
    await harness.turns(1)
    harness.model.hangs_on_close = True
    await asyncio.wait_for(harness.source.close(timeout_s=0.05), 2)
    assert harness.source.close_abandoned


async def test_source_a_signal_during_the_committed_read_assigns_without_taking() -> None:
    """Issue 23: without a group coordinator each offset fetch waits its 10 s, three times; a
    signal arriving meanwhile must not wait for them (past the grace period, the pod is
    killed). The partition is assigned but not taken, and none of its records is offered."""
    harness = await started()
    harness.model.group.is_coordinator_up = False
    harness.model.produce(A0, 3)
    harness.model.rebalance("assign", [A0])
    stop = asyncio.Event()
    task = asyncio.create_task(harness.source.run(stop))
    await asyncio.wait_for(harness.model.reading.wait(), 5)  # waits for a coordinator, 10 s
    stop.set()
    await asyncio.wait_for(task, 1)
    assert all(tps == [] for _, tps in harness.events) and harness.source.assigned == set()
    assert A0 in harness.model.assignment  # librdkafka's: close revokes it
    assert harness.taken == []  # fetched in that last turn, and dropped


async def test_source_a_partition_assigned_again_while_held_is_let_go_as_lost_first() -> None:
    """Issue 23: librdkafka should never assign a partition we hold; if it does, reading starts
    over from the group's commit. The records held for the old assignment are dropped and the
    owner hears of a loss first, so nothing is tracked twice or committed for the old one."""
    harness = await started()
    harness.model.produce(A0, 4)
    harness.model.rebalance("assign", [A0])
    harness.accept = 1
    await harness.turns(1)
    assert len(harness.taken) == 1 and harness.source.held == 3
    harness.model.rebalance("assign", [A0])
    harness.accept = 0  # still held when the assignment is served, inside the next consume()
    await harness.turns(1)
    harness.accept = None
    await harness.turns(2)
    assert [kind for kind, tps in harness.events if tps] == ["assign", "lost", "assign"]
    assert harness.source.generations[A0] == 2 and harness.source.assigned == {A0}
    generations = [e.generation for e in harness.taken]
    assert generations[0] == 1 and set(generations[1:]) == {2}
    assert [e.coords.offset for e in harness.taken[1:]] == [0, 1, 2, 3]  # from the commit


class _FullMessage(Message):
    """A message with a key, headers and a timestamp of its own."""

    def key(self) -> bytes | None:
        return b"customer-7"

    def headers(self) -> list[tuple[str, bytes]] | None:
        return [("traceparent", b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01"), ("x", None)]  # type: ignore[list-item]

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_700_000_000_123)


def test_source_envelope_carries_every_field_of_the_message() -> None:
    """`_envelopes` builds `Envelope` positionally (keywords cost 2.5x): this pins which
    argument lands in which field."""
    source = Harness().source
    source.assigned.add(A1)
    source.generations[A1] = 3
    [envelope] = source._envelopes([_FullMessage(A1, 41, b"avro")])
    assert envelope.coords == Coordinates("orders", 1, 41)
    assert (envelope.value, envelope.key) == (b"avro", b"customer-7")
    traceparent = "00-" + "1" * 32 + "-" + "2" * 16 + "-01"
    assert envelope.headers == (("traceparent", traceparent.encode()), ("x", b""))
    assert (envelope.timestamp_ms, envelope.traceparent) == (1_700_000_000_123, traceparent)
    assert envelope.generation == 3 and envelope.consumed_at_s > 0
