"""The conformance suite (ADP-07) for the `mock` adapter (in process) and for the
`native` adapter against a real `llorch worker --engine mock` process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from worker_adapters.testing.conformance import AdapterConformance
from worker_adapters.testing.processes import EngineProcess
from worker_adapters.testing.scenarios import ConformanceTarget
from worker_adapters.testing.targets import MockTarget, NativeMockTarget

KEY = "mock-worker-key"


@pytest.fixture(scope="module")
def mock_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineProcess]:
    root: Path = tmp_path_factory.mktemp("mock-worker")
    worker = EngineProcess.start_worker(root, "--engine", "mock", "--slots", "4", api_key=KEY)
    yield worker
    worker.stop()
    assert worker.process.returncode == 0


class TestMockAdapterInProcess(AdapterConformance):
    @pytest.fixture
    async def target(self) -> AsyncIterator[ConformanceTarget]:
        target = MockTarget()
        yield target
        await target.adapter.close()


class TestNativeAdapterOnMockWorkerProcess(AdapterConformance):
    @pytest.fixture
    async def target(self, mock_worker: EngineProcess) -> AsyncIterator[ConformanceTarget]:
        target = NativeMockTarget(mock_worker.address, KEY)
        yield target
        await target.adapter.close()
