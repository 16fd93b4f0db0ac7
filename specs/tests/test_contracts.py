"""The contracts and their generated bindings (STYLE rule 9, API-01)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from specs.api import models
from specs.control.v1 import control_pb2
from specs.worker.v1 import worker_pb2

from specs import openapi_document

ROOT = Path(__file__).resolve().parents[2]


def test_generated_bindings_match_the_contracts() -> None:
    """Fails when a .proto or the OpenAPI document changed without `ci/gen-specs`."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "ci" / "gen-specs"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_served_document_is_the_canonical_openapi_file() -> None:
    document = openapi_document()
    assert document == (ROOT / "specs" / "openapi" / "llorch.yaml").read_bytes()
    parsed = yaml.safe_load(document)
    assert parsed["openapi"].startswith("3.1")
    assert "/v2/tasks" in parsed["paths"]


def test_every_error_code_of_the_envelope_is_listed_once() -> None:
    codes = yaml.safe_load(openapi_document())["components"]["schemas"]["ErrorCode"]["enum"]
    assert len(codes) == len(set(codes))
    for required in (
        "INVALID_PARAMS",
        "CONTEXT_OVERFLOW",
        "MODEL_NOT_FOUND",
        "ADMISSION_REJECT",
        "QUEUE_FULL_DROP_LRU",
        "NO_CAPACITY",
        "POOL_UNREADY",
        "WORKER_RESET",
        "CANCELLED",
    ):
        assert required in codes


def test_generated_models_validate_a_task_and_refuse_unknown_fields() -> None:
    task = models.TaskRequest.model_validate({"model": "m", "prompt": "hi", "max_tokens": 4})
    assert task.priority == "interactive"
    with pytest.raises(ValueError, match="bogus"):
        models.TaskRequest.model_validate({"model": "m", "prompt": "hi", "bogus": 1})


def test_proto_messages_round_trip_through_bytes() -> None:
    event = worker_pb2.GenerateEvent(token=worker_pb2.Token(text="é", tokens=2))
    assert worker_pb2.GenerateEvent.FromString(event.SerializeToString()) == event
    snapshot = control_pb2.Snapshot(seq=3, pools=[control_pb2.PoolStatus(pool_id="p", ready=True)])
    assert control_pb2.Snapshot.FromString(snapshot.SerializeToString()).pools[0].pool_id == "p"
