"""The CLI checks the files it is handed before acting: a bad deployment file or a bad
`join --config` is one line naming the file and the key, exit 2, nothing sent or
started."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from llorch.__main__ import main


def closed_url() -> str:
    """An address nothing listens on: reaching it would be exit 3, not 2."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def test_a_bad_deployment_file_is_refused_before_any_entry_is_sent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "deploy.yaml"
    path.write_text("- {name: ok, model: tiny}\n- {name: bad, model: tiny, replica: {min: 1}}\n")
    assert main(["deploy", "apply", str(path), "--url", closed_url()]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"llorch deploy: {path}: [1].replica: unknown setting (did you mean 'replicas'?)"
    ]


def test_a_string_for_a_deployments_aliases_is_refused_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "deploy.yaml"
    path.write_text("name: chat\nmodel: tiny\naliases: default\n")
    assert main(["deploy", "apply", str(path), "--url", closed_url()]) == 2
    assert "aliases: expected a list, got 'default'" in capsys.readouterr().err


def test_a_join_with_a_bad_config_file_names_it_and_starts_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("pools:\n  - {id: a, engine: mock, slots: two}\nrestart: {max_crashs: 3}\n")
    state = tmp_path / "state"
    argv = ["join", "127.0.0.1:8090", "--token", "t", "--config", str(path)]
    assert main([*argv, "--state-dir", str(state)]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"llorch: {path}: restart.max_crashs: unknown setting (did you mean 'max_crashes'?); "
        "pools[0].slots: expected a whole number, got 'two'"
    ]
    assert not (state / "join" / "pool-managerd.yaml").exists()
