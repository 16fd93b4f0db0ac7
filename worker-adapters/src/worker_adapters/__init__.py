"""The adapter protocol, the adapters, and the in-process engines of `llorch worker`.

Public surface:
- domain types (`GenerateRequest`, `Sampling`, `ChatTurn`, the events `Started`, `Token`,
  `End`, `Failed`, and `EngineHealth`, `EngineProps`, `Tokenized`);
- the `Adapter` protocol, `Endpoint`, and the registry `create_adapter` / `register`;
- the error tree in `worker_adapters.errors`.

Adapters register themselves by kind when this package is imported: `native` (gRPC to
`llorch worker`), `mock` (the fake engine, in-process), and the HTTP engines `llamacpp`
(llama-server), `openai` (any OpenAI-compatible server), `vllm` and `tgi`. Fake engine
servers and the shared conformance suite live in `worker_adapters.testing`.
"""

from __future__ import annotations

from worker_adapters import preload as _preload

if _preload.wanted():  # an in-process llama.cpp worker: its libraries first (preload.py)
    _preload.load_llama_first()

from worker_adapters import inproc as _inproc  # registers "mock"
from worker_adapters import llamacpp as _llamacpp  # registers "llamacpp"
from worker_adapters import native as _native  # registers "native"
from worker_adapters import openai_compat as _openai  # registers "openai"
from worker_adapters import tgi as _tgi  # registers "tgi"
from worker_adapters import triton as _triton  # registers "triton"
from worker_adapters import vllm as _vllm  # registers "vllm"
from worker_adapters.protocol import Adapter, Endpoint, create_adapter, known_kinds, register
from worker_adapters.types import (
    ChatTurn,
    End,
    EngineHealth,
    EngineProps,
    Failed,
    GenerateRequest,
    Sampling,
    Started,
    StreamEvent,
    Token,
    Tokenized,
    TokenLogprob,
    ToolCall,
    TopLogprob,
)

del _inproc, _llamacpp, _native, _openai, _tgi, _triton, _vllm

__all__ = [
    "Adapter",
    "ChatTurn",
    "End",
    "Endpoint",
    "EngineHealth",
    "EngineProps",
    "Failed",
    "GenerateRequest",
    "Sampling",
    "Started",
    "StreamEvent",
    "Token",
    "TokenLogprob",
    "Tokenized",
    "ToolCall",
    "TopLogprob",
    "create_adapter",
    "known_kinds",
    "register",
]
