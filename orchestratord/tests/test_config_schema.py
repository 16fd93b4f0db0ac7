"""orchestratord's file is checked against a typed model: a wrong type, a typo or a bad
API key entry is a ConfigError of one line naming the file, the key path and what was
expected; the model's defaults are `OrchestratorConfig`'s."""

from __future__ import annotations

from pathlib import Path

import pytest
from orchestratord.config import ConfigError, OrchestratorConfig, load_config

DIGEST = "ab" * 32


@pytest.fixture(autouse=True)
def join_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLORCH_JOIN_TOKEN", "t")


def error_of(path: Path, text: str) -> str:
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    return message


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("http_prot: 9000\n", "http_prot: unknown setting (did you mean 'http_port'?)"),
        ("http_port: '9000'\n", "http_port: expected a whole number, got '9000'"),
        ("journal: 1\n", "journal: expected true or false, got 1"),
        ("routing: fastest\n", "routing: expected 'predicted' or 'least_loaded', got 'fastest'"),
        ("api_keys: ops\n", "api_keys: expected a list"),
        (
            f"api_keys:\n  - {{name: a, key_sha256: '{DIGEST}'}}\n  - {{name: b, key_sha256: x}}\n",
            "api_keys[1].key_sha256: expected text matching",
        ),
        (
            f"api_keys:\n  - {{name: a, key_sha256: '{DIGEST}', rol: admin}}\n",
            "api_keys[0].rol: unknown setting (did you mean 'role'?)",
        ),
        ("tls: {ca_fle: /x}\n", "tls.ca_fle: unknown setting (did you mean 'ca_file'?)"),
        ("lease_ms: 1000\n", "lease_ms must be longer than heartbeat_interval_ms"),
    ],
)
def test_a_bad_setting_is_one_line_naming_the_file_and_key(
    tmp_path: Path, text: str, named: str
) -> None:
    assert named in error_of(tmp_path / "o.yaml", text)


def test_a_bad_entry_in_the_api_keys_file_names_that_file_and_the_entry(tmp_path: Path) -> None:
    keys = tmp_path / "keys.yaml"
    keys.write_text(f"- {{name: ops, key_sha256: '{DIGEST}', role: root}}\n")
    message = error_of(tmp_path / "o.yaml", f"api_keys_file: {keys}\n")
    assert f": api_keys_file: {keys}: api_keys[0].role: expected 'admin' or 'client'" in message


def test_a_key_written_where_its_digest_belongs_is_not_repeated_in_the_error(
    tmp_path: Path,
) -> None:
    text = "api_keys:\n  - {name: ops, key_sha256: sk-the-raw-SECRET-key}\n"
    message = error_of(tmp_path / "o.yaml", text)
    assert "api_keys[0].key_sha256: expected text matching" in message
    assert "SECRET" not in message


def test_broken_yaml_is_one_line_naming_the_file(tmp_path: Path) -> None:
    assert "not valid YAML" in error_of(tmp_path / "o.yaml", "routing: [\n  x: {\n")


def test_the_models_defaults_are_the_config_objects_defaults(tmp_path: Path) -> None:
    path = tmp_path / "o.yaml"
    path.write_text("")
    assert load_config(path) == load_config(None) == OrchestratorConfig()
    path.write_text(f"api_keys:\n  - {{name: ops, key_sha256: '{DIGEST.upper()}'}}\n")
    (key,) = load_config(path).api_keys
    assert (key.name, key.key_sha256, key.role, key.max_concurrent) == (
        "ops",
        DIGEST,
        "client",
        None,
    )


def test_memory_keeps_1000_finished_jobs_with_the_journal_10000_without_unless_told(
    tmp_path: Path,
) -> None:
    path = tmp_path / "o.yaml"
    for text, kept in [
        ("", 1_000),
        ("journal: false\n", 10_000),
        ("finished_tasks_kept: 50\n", 50),
        ("journal: false\nfinished_tasks_kept: 0\n", 0),
    ]:
        path.write_text(text)
        assert load_config(path).finished_kept == kept, text
    assert "finished_tasks_kept must not be negative" in error_of(path, "finished_tasks_kept: -1\n")
