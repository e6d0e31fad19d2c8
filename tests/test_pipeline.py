from __future__ import annotations

import pytest

from consumer.config import load_config
from consumer.engine.pipeline import Pipeline
from consumer.records import Coordinates, Fate
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


async def test_pipeline_a_final_commit_without_a_coordinator_waits_no_longer_than_the_grace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """librdkafka holds a synchronous commit until a coordinator is known, without a timeout
    of its own: stopping during a coordinator outage must not wait for one."""
    import asyncio
    import time

    from consumer.records import Commit

    pipeline = Pipeline(load_config({**ENV, "CAPI_DEDUP_BACKEND": "memory"}))
    tp = ("orders", 0)
    pipeline.ledger.assign(tp, 1)
    pipeline.ledger.track(Coordinates("orders", 0, 0), 1)
    pipeline.ledger.finish(Coordinates("orders", 0, 0), 1, Fate.DELIVERED)

    async def never_answered(commits: dict[object, Commit]) -> dict[object, Commit]:
        await asyncio.Event().wait()
        return {}

    monkeypatch.setattr(pipeline.source, "commit_now", never_answered)
    pipeline._shutdown_deadline_s = time.monotonic() + 0.2  # the grace is nearly spent
    started = time.monotonic()
    await pipeline._commit()
    assert time.monotonic() - started < 1.5  # MIN_FINAL_COMMIT_S and no more
