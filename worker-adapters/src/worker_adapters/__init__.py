"""The adapter protocol, the adapters, and the in-process engines of `llorch worker`.

Public surface:
- domain types (`GenerateRequest`, `Sampling`, `ChatTurn`, the events `Started`, `Token`,
  `End`, `Failed`, and `EngineHealth`, `EngineProps`, `Tokenized`);
- the `Adapter` protocol, `Endpoint`, and the registry `create_adapter` / `register`;
- the error tree in `worker_adapters.errors`.

Adapters register themselves by kind when this package is imported: `native` (gRPC to
`llorch worker`) and `mock` (the fake engine, in-process).
"""

from __future__ import annotations

from worker_adapters import inproc as _inproc  # registers "mock"
from worker_adapters import native as _native  # registers "native"
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
)

del _inproc, _native

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
    "Tokenized",
    "create_adapter",
    "known_kinds",
    "register",
]
