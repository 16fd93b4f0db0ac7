"""`engine_ports`: engines of a host listen within one range (one firewall rule)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from pool_managerd.config import ConfigError, load_config
from pool_managerd.engines import free_port


def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ports: object) -> Path:
    monkeypatch.setenv("LLORCH_JOIN_TOKEN", "t")
    path = tmp_path / "m.yaml"
    path.write_text(f"orchestrator: 127.0.0.1:8090\nengine_ports: {ports}\n")
    return path


def test_a_port_range_is_read_as_first_and_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = load_config(config(tmp_path, monkeypatch, "41000-41999"))
    assert loaded.engine_port_range == (41000, 41999)


@pytest.mark.parametrize("ports", ["41000", "41999-41000", "80-90", "a-b", "41000-70000"])
def test_an_unusable_port_range_is_a_config_error_naming_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ports: str
) -> None:
    with pytest.raises(ConfigError, match="engine_ports"):
        load_config(config(tmp_path, monkeypatch, ports))


def test_free_ports_come_from_the_range_and_skip_taken_ones() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        busy = taken.getsockname()[1]
        assert busy < 65535  # the kernel's ephemeral range ends below (60999 by default)
        for _ in range(20):
            assert free_port("127.0.0.1", (busy, busy + 1)) == busy + 1


def test_a_full_range_is_an_os_error_saying_so() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        busy = taken.getsockname()[1]
        with pytest.raises(OSError, match="no free port in engine_ports"):
            free_port("127.0.0.1", (busy, busy))
