"""Deployment files are checked against the API's model before anything is sent, and the
configuration reference page is the one the models generate (`ci/gen-config-doc`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from specs.deployment_file import load_deployments
from specs.settings import SettingsError

ROOT = Path(__file__).resolve().parents[2]


def test_the_configuration_reference_is_generated_from_the_models() -> None:
    """Fails when a configuration model changed without `ci/gen-config-doc`."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "ci" / "gen-config-doc"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    page = (ROOT / "docs" / "configuration.md").read_text()
    for key in ("`routing`", "`pools[]`", "`max_backoff_s`", "`idle_unload_after_ms`"):
        assert key in page


def test_a_deployment_file_gives_each_name_and_the_body_as_written(tmp_path: Path) -> None:
    path = tmp_path / "d.yaml"
    path.write_text(
        "- {name: chat, model: tiny, replicas: {min: 0, max: 2}, aliases: [default]}\n"
        "- {name: embed, model: tiny, policy: binpack}\n"
    )
    assert load_deployments(path) == [
        ("chat", {"model": "tiny", "replicas": {"min": 0, "max": 2}, "aliases": ["default"]}),
        ("embed", {"model": "tiny", "policy": "binpack"}),
    ]
    path.write_text("name: one\nmodel: tiny\n")
    assert load_deployments(path) == [("one", {"model": "tiny"})]


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("name: a\nmodel: m\naliases: default\n", "aliases: expected a list, got 'default'"),
        (
            "name: a\nmodel: m\nreplicas: {mn: 1}\n",
            "replicas.mn: unknown setting (did you mean 'min'?)",
        ),
        ("name: a\nmodel: m\nctx: '4096'\n", "ctx: expected a whole number, got '4096'"),
        ("name: a\nmodel: m\npolicy: pack\n", "policy: expected 'binpack' or 'spread'"),
        ("name: A!\nmodel: m\n", "name: expected text matching"),
        ("model: m\n", "name: required, missing"),
        (
            "- {name: a, model: m}\n- {name: b, model: m, slots: 0}\n",
            "[1].slots: expected a value >= 1",
        ),
        ("- {name: a, model: m}\n- just a string\n", "[1]: expected a mapping"),
        ("name: [\n", "not valid YAML"),
    ],
)
def test_a_bad_deployment_file_is_one_line_naming_the_file_and_key(
    tmp_path: Path, text: str, named: str
) -> None:
    path = tmp_path / "d.yaml"
    path.write_text(text)
    with pytest.raises(SettingsError) as caught:
        load_deployments(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert named in message
