from __future__ import annotations

import pytest

from consumer.config import load_config
from consumer.engine.pipeline import Pipeline
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
