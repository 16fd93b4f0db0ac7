"""Load progress (issue 14): the in-process llama.cpp engine reports the fraction of its
weights loaded, from llama.cpp's own callback, while it loads; the native wire carries it
(and its absence)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import llama_cpp
import pytest
from catalog_core import write_tiny_model
from specs.worker.v1 import worker_pb2 as pb
from worker_adapters.llamacpp_inproc.backend import LlamaBackend, LlamaSettings
from worker_adapters.native.translate import health_from_wire, health_to_wire
from worker_adapters.types import EngineHealth


class _Watched(LlamaBackend):
    """Records what `health()` answers each time llama.cpp reports progress."""

    def __init__(self, settings: LlamaSettings) -> None:
        super().__init__(settings)
        self.seen: list[EngineHealth] = []

    def _loaded_fraction(self, fraction: float) -> None:
        super()._loaded_fraction(fraction)
        self.seen.append(self.health())


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("progress") / "tiny.gguf")


def test_health_reports_the_fraction_loaded_over_every_slot_while_loading(
    tiny_model: Path,
) -> None:
    backend = _Watched(LlamaSettings(tiny_model, ctx=256, slots=2, threads=1))
    assert backend.health().state == "loading" and backend.health().load_progress == 0.0

    async def load() -> None:
        await backend.start()
        await backend.close()

    asyncio.run(load())
    progress = [h.load_progress for h in backend.seen]
    assert {h.state for h in backend.seen} == {"loading"}
    assert len(progress) >= 4, progress  # several reports per load, two loads
    assert all(p is not None for p in progress)
    values = [p for p in progress if p is not None]
    assert values == sorted(values) and values[-1] == 1.0
    assert any(0.0 < p <= 0.5 for p in values)  # the first of two slots: half of the work
    assert backend.health().load_progress is None  # loaded (closed): no progress to show


def test_the_default_model_parameters_are_restored_after_a_load(tiny_model: Path) -> None:
    original = llama_cpp.llama_cpp.llama_model_default_params
    backend = LlamaBackend(LlamaSettings(tiny_model, ctx=256, slots=1, threads=1))
    asyncio.run(backend.start())
    asyncio.run(backend.close())
    assert llama_cpp.llama_cpp.llama_model_default_params is original
    assert not llama_cpp.llama_cpp.llama_model_default_params().progress_callback


@pytest.mark.parametrize("progress", [None, 0.0, 0.25, 1.0])
def test_the_wire_carries_load_progress_and_its_absence(progress: float | None) -> None:
    health = EngineHealth("loading", "loading model", 2, 0, progress)
    wire = pb.HealthReply.FromString(health_to_wire(health).SerializeToString())
    assert health_from_wire(wire) == health
