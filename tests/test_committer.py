from __future__ import annotations

import asyncio
import time

import pytest

from consumer.config import load_config
from consumer.engine.committer import Committer
from consumer.engine.pipeline import Pipeline
from consumer.records import Commit, Coordinates, Fate, TopicPartition
from tests.test_pipeline import ENV


def wired_committer() -> Committer:
    """The committer as the pipeline wires it (its source, ledger and stages)."""
    return Pipeline(load_config({**ENV, "CAPI_DEDUP_BACKEND": "memory"})).committer


async def test_committer_halves_the_map_on_each_refusal_down_to_plain_commits() -> None:
    committer = wired_committer()
    sizes = []
    for refusals in range(1, 9):
        committer.source.commits.metadata_refusals = refusals
        committer.shorten_map_if_refused()
        sizes.append(committer.ledger.max_metadata_bytes)
    assert sizes == [2000, 1000, 500, 250, 125, 62, 0, 0]


def committer_whose_commits_go_unanswered(monkeypatch: pytest.MonkeyPatch) -> Committer:
    """One final offset to commit, and a client that never answers a synchronous commit (as
    librdkafka, which holds one until a group coordinator is known, with no timeout of its
    own)."""
    committer = wired_committer()
    committer.ledger.assign(("orders", 0), 1)
    committer.ledger.track(Coordinates("orders", 0, 0), 1)
    committer.ledger.finish(Coordinates("orders", 0, 0), 1, Fate.DELIVERED)

    async def never_answered(commits: dict[TopicPartition, Commit]) -> dict[TopicPartition, Commit]:
        await asyncio.Event().wait()
        return {}

    monkeypatch.setattr(committer.source, "commit_now", never_answered)
    return committer


async def test_committer_a_final_commit_without_a_coordinator_waits_no_longer_than_the_grace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    committer = committer_whose_commits_go_unanswered(monkeypatch)
    committer.shutdown_deadline_s = time.monotonic() + 0.2  # the grace is nearly spent
    started = time.monotonic()
    await committer.commit()
    assert time.monotonic() - started < 1.5  # MIN_FINAL_COMMIT_S and no more


async def test_committer_a_commit_waiting_when_the_signal_arrives_ends_by_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A revoke's commit begun before the signal: the grace counts from the signal, and the
    commit shares it (issue 23: the source's last turn must fit in the grace period)."""
    committer = committer_whose_commits_go_unanswered(monkeypatch)
    committing = asyncio.create_task(committer.commit())
    await asyncio.sleep(0.3)
    assert not committing.done()  # no deadline yet
    committer.shutdown_deadline_s = time.monotonic()  # the signal, with no grace left
    await asyncio.wait_for(committing, 2.5)  # noticed within a second, then MIN_FINAL_COMMIT_S


async def test_committer_a_revoke_commit_waits_no_longer_than_its_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Outside shutdown too: an unanswered commit inside a revoke would stall the consume loop
    until its liveness probe restarts the pod."""
    committer = committer_whose_commits_go_unanswered(monkeypatch)
    await asyncio.wait_for(committer.commit(wait_s=0.2), 1.0)
