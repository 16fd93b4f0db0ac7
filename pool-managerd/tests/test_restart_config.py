"""`restart` in the pool manager's config: the back-off and the breaker (POOL-04) are
settable (a chaos run sets a lenient breaker), and a bad value is a config error naming
the setting, never a crash of the daemon."""

from __future__ import annotations

from pathlib import Path

import pytest
from pool_managerd.config import ConfigError, load_config
from pool_managerd.lifecycle import RestartPolicy


def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restart: str) -> Path:
    monkeypatch.setenv("LLORCH_JOIN_TOKEN", "t")
    path = tmp_path / "m.yaml"
    path.write_text(f"orchestrator: 127.0.0.1:8090\nrestart: {restart}\n")
    return path


def test_the_breaker_and_back_off_are_read_from_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    restart = "{max_crashes: 100, crash_window_s: 30, initial_backoff_s: 0.2, factor: 1.5}"
    policy = load_config(config(tmp_path, monkeypatch, restart)).restart
    assert (policy.max_crashes, policy.crash_window_s) == (100, 30)
    assert (policy.initial_backoff_s, policy.factor) == (0.2, 1.5)
    assert policy.max_backoff_s == RestartPolicy().max_backoff_s  # the rest keep defaults


def test_without_a_restart_section_the_documented_defaults_apply(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLORCH_JOIN_TOKEN", "t")
    path = tmp_path / "m.yaml"
    path.write_text("orchestrator: 127.0.0.1:8090\n")
    policy = load_config(path).restart
    assert (policy.initial_backoff_s, policy.factor, policy.max_backoff_s) == (1.0, 2.0, 60.0)
    assert (policy.max_crashes, policy.crash_window_s, policy.reset_after_s) == (5, 600.0, 600.0)


@pytest.mark.parametrize(
    ("restart", "named"),
    [
        ("{max_crash: 9}", r"restart.max_crash: unknown setting \(did you mean 'max_crashes'\?\)"),
        ("{max_crashes: 2.5}", "restart.max_crashes: expected a whole number"),
        ("{crash_window_s: soon}", "restart.crash_window_s: expected a number"),
        ("{max_crashes: 0}", "restart.max_crashes: expected a value > 0, got 0"),
        ("{jitter_ratio: 1}", "restart.jitter_ratio: expected a value < 1"),
        ("{initial_backoff_s: 5, max_backoff_s: 1}", "must not be below initial_backoff_s"),
        ("[1, 2]", "restart: expected a mapping"),
    ],
)
def test_a_bad_restart_setting_is_a_config_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restart: str, named: str
) -> None:
    with pytest.raises(ConfigError, match=named):
        load_config(config(tmp_path, monkeypatch, restart))
