"""The decisions the real in-process engines (llama.cpp's `LlamaBackend`, vLLM's
`VllmBackend`) share, from `worker_adapters.engine`: their health, their props and why a
generation cannot start."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from worker_adapters.engine import (
    GENERATION_FEATURES,
    engine_health,
    engine_props,
    refusal_to_start,
)
from worker_adapters.types import EngineHealth, Failed, GenerateRequest, Sampling


@dataclass(frozen=True)
class Settings:
    model_path: Path = Path("/models/tiny")
    ctx: int = 4096
    slots: int = 3


LOADING = EngineHealth("loading", "loading model", 3)


def test_a_loading_engine_reports_its_load_progress_where_it_knows_it() -> None:
    assert engine_health(LOADING, 0, 0, 0.25) == EngineHealth(
        "loading", "loading model", 3, 0, 0.25
    )
    assert engine_health(LOADING, 0, 0) == LOADING  # no progress known: None


def test_a_failed_engine_reports_its_failure_as_it_is() -> None:
    failed = EngineHealth("failed", "model load failed: bad file")
    assert engine_health(failed, 3, 2, 0.5) is failed


def test_a_ready_engine_reports_its_busy_slots_of_its_total() -> None:
    ready = EngineHealth("ready", "", 3)
    assert engine_health(ready, 3, 2) == EngineHealth("ready", "", 3, 2)


@pytest.mark.parametrize("embeddings", [False, True])
def test_props_name_the_generation_features_and_embedding_only_where_served(
    embeddings: bool,
) -> None:
    props = engine_props(
        "llamacpp-inproc",
        "llama-cpp-python 1.0",
        Settings(),
        chat_template=True,
        embeddings=embeddings,
        incarnation=7,
    )
    assert props.features == GENERATION_FEATURES | ({"embedding"} if embeddings else set())
    assert (props.engine, props.engine_version) == ("llamacpp-inproc", "llama-cpp-python 1.0")
    assert (props.ctx, props.slots_total, props.model_path) == (4096, 3, "/models/tiny")
    assert props.chat_template and props.incarnation == 7


@pytest.mark.parametrize("engine", ["llamacpp-inproc", "vllm-inproc"])
def test_a_generation_cannot_start_on_an_engine_not_ready_and_may_retry(engine: str) -> None:
    request = GenerateRequest("j1", Sampling(max_tokens=4), prompt="hi")
    assert refusal_to_start(engine, False, request) == Failed(
        "POOL_UNREADY", "engine is not ready", True, True
    )
    assert refusal_to_start(engine, True, request) is None


@pytest.mark.parametrize("engine", ["llamacpp-inproc", "vllm-inproc"])
def test_a_ready_engine_refuses_what_its_capability_row_refuses(engine: str) -> None:
    tools = '[{"name": "f", "parameters": {"type": "object"}}]'
    request = GenerateRequest("j1", Sampling(max_tokens=4, tools=tools), prompt="hi")
    refused = refusal_to_start(engine, True, request)
    assert isinstance(refused, Failed) and refused.code == "UNSUPPORTED_PARAM", refused
    assert not refused.retriable
