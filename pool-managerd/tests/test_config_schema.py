"""pool-managerd's file is checked against typed models: a wrong type, a typo, a string
where a list belongs or a bad entry deep in a list is a ConfigError of one line naming
the file, the key path and what was expected; the models' defaults are the config
objects' defaults."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from pool_managerd.config import (
    ConfigError,
    ManagerConfig,
    ModelConfig,
    PoolConfig,
    SimulatedDevice,
    load_config,
)
from pool_managerd.config_schema import (
    DeviceSettings,
    ModelSettings,
    PoolSettings,
    RestartSettings,
)
from pool_managerd.lifecycle import RestartPolicy

HEAD = "orchestrator: 127.0.0.1:8090\n"
Write = Callable[[str], Path]


@pytest.fixture
def write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Write:
    monkeypatch.setenv("LLORCH_JOIN_TOKEN", "t")

    def written(body: str) -> Path:
        path = tmp_path / "pm.yaml"
        path.write_text(HEAD + body)
        return path

    return written


def error_of(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    return message


def test_a_string_where_a_list_belongs_is_an_error_not_a_list_of_letters(write: Write) -> None:
    path = write("pools:\n  - {id: a, engine: mock, aliases: default}\n")
    assert error_of(path) == f"{path}: pools[0].aliases: expected a list, got 'default'"


def test_a_typo_in_a_list_entry_names_its_index_and_the_close_known_key(write: Write) -> None:
    path = write("pools:\n  - {id: a, engine: mock}\n  - {id: b, engine: mock, slotz: 2}\n")
    assert error_of(path) == f"{path}: pools[1].slotz: unknown setting (did you mean 'slots'?)"


def test_a_wrong_type_under_restart_is_one_line_naming_the_nested_key(write: Write) -> None:
    path = write("restart:\n  max_backoff_s: [1]\n")
    assert error_of(path) == f"{path}: restart.max_backoff_s: expected a number, got a list"


def test_a_key_unlike_any_known_one_gets_no_hint(write: Write) -> None:
    message = error_of(write("colour: blue\n"))
    assert message.endswith("colour: unknown setting")


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ("insecure: 'yes'\n", "insecure: expected true or false, got 'yes'"),
        ("heartbeat_interval_ms: '2000'\n", "heartbeat_interval_ms: expected a whole number"),
        ("engine_tls: 1\n", "engine_tls: expected true or false, got 1"),
        ("pools:\n  - {id: a, engine: mock, ctx: 1.5}\n", "pools[0].ctx: expected a whole number"),
        (
            "pools:\n  - {id: a, engine: vllm-turbo}\n",
            "pools[0].engine: expected 'llamacpp-inproc'",
        ),
        ("pools:\n  - {id: 'a b', engine: mock}\n", "pools[0].id: expected text matching"),
        ("pools:\n  - {engine: mock}\n", "pools[0].id: required, missing"),
        (
            "devices:\n  - {id: g, memory_total_bytes: lots}\n",
            "devices[0].memory_total_bytes: expected a whole number, got 'lots'",
        ),
        ("models: {id: m}\n", "models: expected a list, got a mapping"),
        ("restart: 3\n", "restart: expected a mapping, got 3"),
    ],
)
def test_strict_types_name_the_key_and_what_was_expected(
    write: Write, body: str, named: str
) -> None:
    assert named in error_of(write(body))


def test_several_errors_come_together_on_one_line(write: Write) -> None:
    body = "a1: 1\na2: 2\na3: 3\na4: 4\na5: 5\n"
    message = error_of(write(body))
    assert message.count("unknown setting") == 3 and message.endswith("(and 2 more)")


def test_broken_yaml_and_a_list_at_the_top_are_one_line_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLORCH_JOIN_TOKEN", "t")
    path = tmp_path / "pm.yaml"
    path.write_text("orchestrator: [\n  pools: {\n")
    assert "not valid YAML" in error_of(path)
    path.write_text("- orchestrator\n")
    assert "expected a mapping" in error_of(path)
    path.write_text("")
    assert error_of(path) == f"{path}: orchestrator: required, missing"
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_empty_sections_take_their_defaults(write: Write) -> None:
    config = load_config(write("pools:\nmodels:\nrestart:\nengines:\n"))
    assert (config.pools, config.models, config.restart) == ((), (), RestartPolicy())
    assert config.engines == ("llamacpp-inproc", "mock")


def test_lists_become_the_config_objects_tuples(write: Write) -> None:
    body = (
        "pools:\n  - {id: a, model: /m/a.gguf, aliases: [x, y], engine_command: [run, -q]}\n"
        "models:\n  - {id: m, path: /m/m.gguf, aliases: [small]}\n"
        "devices:\n  - {id: gpu0, memory_total_bytes: 8, compute_capability: '9.0'}\n"
    )
    config = load_config(write(body))
    assert config.pools[0].aliases == ("x", "y")
    assert config.pools[0].engine_command == ("run", "-q")
    assert config.models == (ModelConfig("m", "/m/m.gguf", aliases=("small",)),)
    assert config.devices[0] == SimulatedDevice(
        "gpu0", memory_total_bytes=8, compute_capability="9.0"
    )


def test_the_models_defaults_are_the_config_objects_defaults(write: Write) -> None:
    assert load_config(write("")) == ManagerConfig(
        orchestrator="127.0.0.1:8090", host_id=socket.gethostname()
    )
    assert RestartPolicy(**RestartSettings().model_dump()) == RestartPolicy()
    pool = PoolSettings(id="p").model_dump()
    assert PoolConfig(**{**pool, "aliases": (), "engine_command": ()}) == PoolConfig(id="p")
    model = ModelSettings(id="m", path="/m").model_dump()
    assert ModelConfig(**{**model, "aliases": ()}) == ModelConfig(id="m", path="/m")
    assert SimulatedDevice(**DeviceSettings(id="d").model_dump()) == SimulatedDevice(id="d")
