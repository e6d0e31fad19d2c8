from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.rig import SandboxProcess, Topics, make_topics

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def sandbox_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxProcess]:
    sandbox = SandboxProcess(tmp_path_factory.mktemp("sandbox"))
    yield sandbox
    sandbox.stop()


@pytest.fixture
def sandbox(sandbox_process: SandboxProcess) -> SandboxProcess:
    sandbox_process.reset()
    return sandbox_process


@pytest.fixture
def topics(kafka: object, tmp_path: Path) -> Topics:
    from devenv.kafka import KafkaBroker

    assert isinstance(kafka, KafkaBroker)
    return make_topics(kafka, f"it{uuid.uuid4().hex[:8]}", tmp_path)
