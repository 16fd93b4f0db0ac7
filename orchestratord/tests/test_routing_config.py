"""The `routing` switch of orchestratord's configuration (PLC-03 baseline for the bench)."""

from __future__ import annotations

import pytest
from orchestratord.config import ConfigError, load_config


@pytest.fixture(autouse=True)
def join_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLORCH_JOIN_TOKEN", "t")


def test_routing_defaults_to_predicted_finish_time_with_prefix_affinity() -> None:
    assert load_config(None).routing == "predicted"


def test_least_loaded_routing_is_accepted() -> None:
    assert load_config(None, routing="least_loaded").routing == "least_loaded"


def test_an_unknown_routing_is_a_config_error_naming_the_field() -> None:
    with pytest.raises(ConfigError, match="routing"):
        load_config(None, routing="random")
