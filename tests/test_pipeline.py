from __future__ import annotations

import asyncio
import time

import pytest

from consumer.config import load_config
from consumer.engine.pipeline import Pipeline
from consumer.records import Commit, Coordinates, Fate, TopicPartition
from consumer.stages.dedup import MemoryDedupStore
from consumer.stages.dedup_redis import RedisDedupStore
from tests.test_config import BASE

ENV = {
    **BASE,
    "CAPI_DEDUP_BACKEND": "redis",
    "CAPI_REDIS_URL": "redis://127.0.0.1:6399/0",
    "CAPI_HEALTH_PORT": "0",
}


@pytest.mark.parametrize("switch", ["CAPI_DRY_RUN", "CAPI_TEST_MODE"])
async def test_pipeline_dry_run_and_test_mode_never_use_the_shared_dedup_store(
    switch: str,
) -> None:
    """Run with production's environment, they confirmed keys in the shared Redis for events
    they never delivered, and production then dropped those events as duplicates (issue 24)."""
    pipeline = Pipeline(load_config({**ENV, switch: "true"}))
    assert isinstance(pipeline.dedup, MemoryDedupStore)


async def test_pipeline_production_uses_the_configured_shared_dedup_store() -> None:
    pipeline = Pipeline(load_config(ENV))
    assert isinstance(pipeline.dedup, RedisDedupStore)
    await pipeline.dedup.close()


async def test_pipeline_halves_the_map_on_each_refusal_down_to_plain_commits() -> None:
    pipeline = Pipeline(load_config({**ENV, "CAPI_DEDUP_BACKEND": "memory"}))
    sizes = []
    for refusals in range(1, 9):
        pipeline.source.commits.metadata_refusals = refusals
        pipeline._shorten_map_if_refused()
        sizes.append(pipeline.ledger.max_metadata_bytes)
    assert sizes == [2000, 1000, 500, 250, 125, 62, 0, 0]


def pipeline_whose_commits_go_unanswered(monkeypatch: pytest.MonkeyPatch) -> Pipeline:
    """One final offset to commit, and a client that never answers a synchronous commit (as
    librdkafka, which holds one until a group coordinator is known, with no timeout of its
    own)."""
    pipeline = Pipeline(load_config({**ENV, "CAPI_DEDUP_BACKEND": "memory"}))
    pipeline.ledger.assign(("orders", 0), 1)
    pipeline.ledger.track(Coordinates("orders", 0, 0), 1)
    pipeline.ledger.finish(Coordinates("orders", 0, 0), 1, Fate.DELIVERED)

    async def never_answered(commits: dict[TopicPartition, Commit]) -> dict[TopicPartition, Commit]:
        await asyncio.Event().wait()
        return {}

    monkeypatch.setattr(pipeline.source, "commit_now", never_answered)
    return pipeline


async def test_pipeline_a_final_commit_without_a_coordinator_waits_no_longer_than_the_grace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pipeline = pipeline_whose_commits_go_unanswered(monkeypatch)
    pipeline._shutdown_deadline_s = time.monotonic() + 0.2  # the grace is nearly spent
    started = time.monotonic()
    await pipeline._commit()
    assert time.monotonic() - started < 1.5  # MIN_FINAL_COMMIT_S and no more


async def test_pipeline_a_commit_waiting_when_the_signal_arrives_ends_by_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A revoke's commit begun before the signal: the grace counts from the signal, and the
    commit shares it (issue 23: the source's last turn must fit in the grace period)."""
    pipeline = pipeline_whose_commits_go_unanswered(monkeypatch)
    committing = asyncio.create_task(pipeline._commit())
    await asyncio.sleep(0.3)
    assert not committing.done()  # no deadline yet
    pipeline._shutdown_deadline_s = time.monotonic()  # the signal, with no grace left
    await asyncio.wait_for(committing, 2.5)  # noticed within a second, then MIN_FINAL_COMMIT_S


async def test_pipeline_a_revoke_commit_waits_no_longer_than_its_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Outside shutdown too: an unanswered commit inside a revoke would stall the consume loop
    until its liveness probe restarts the pod."""
    pipeline = pipeline_whose_commits_go_unanswered(monkeypatch)
    await asyncio.wait_for(pipeline._commit(wait_s=0.2), 1.0)
