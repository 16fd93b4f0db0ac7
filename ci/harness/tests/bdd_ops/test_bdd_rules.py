"""The rules the operator's scenarios run under (TST-03): every scenario names the
requirements it evidences, every feature file is executed by a module here, and a step
that two definitions match, or none, fails its scenario (shown on a throw-away
feature run by a separate pytest)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from ci_harness.bdd_rules import REQUIREMENT_TAG
from ci_harness.scenes import REPO
from pytest_bdd.feature import get_features

FEATURES = REPO / "specs/features/operations"
HERE = Path(__file__).parent


def test_every_operations_scenario_is_tagged_with_requirement_ids_only() -> None:
    features = get_features([str(FEATURES)])
    assert len(features) >= 6, [f.filename for f in features]
    for feature in features:
        assert feature.scenarios, feature.filename
        for name, scenario in feature.scenarios.items():
            tags = scenario.tags | feature.tags
            assert tags, f"{feature.rel_filename}: {name!r} names no requirement"
            wrong = sorted(t for t in tags if not REQUIREMENT_TAG.fullmatch(t))
            assert not wrong, f"{feature.rel_filename}: {name!r}: not requirement IDs: {wrong}"


def test_every_operations_feature_is_bound_by_a_test_module() -> None:
    bound = "".join(path.read_text() for path in HERE.glob("test_*.py"))
    for feature in sorted(FEATURES.glob("*.feature")):
        assert f'"specs/features/operations/{feature.name}"' in bound, feature.name


def test_an_ambiguous_or_unknown_step_fails_its_scenario_and_tags_become_marks(
    tmp_path: Path,
) -> None:
    (tmp_path / "rules.feature").write_text(
        textwrap.dedent(
            """\
            Feature: Rules
              @ABC-01
              Scenario: Known
                Given a step with one definition

              Scenario: Ambiguous
                Given a step with "two" definitions

              Scenario: Unknown
                Given a step nobody wrote
            """
        )
    )
    (tmp_path / "test_rules.py").write_text(
        textwrap.dedent(
            """\
            from pytest_bdd import given, parsers, scenarios

            scenarios("rules.feature")

            @given("a step with one definition")
            def _() -> None:
                pass

            @given('a step with "two" definitions')
            def _() -> None:
                pass

            @given(parsers.parse('a step with "{what}" definitions'))
            def _(what: str) -> None:
                pass
            """
        )
    )
    (tmp_path / "conftest.py").write_text(
        "from ci_harness.bdd_rules import pytest_bdd_apply_tag, pytest_bdd_before_scenario\n"
        "from ci_harness.bdd_rules import pytest_configure\n"
    )
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rf"]
    command += ["--strict-markers", str(tmp_path)]
    run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert "2 failed, 1 passed" in run.stdout, run.stdout
    assert "ambiguous steps" in run.stdout and "matches 2 definitions" in run.stdout
    assert "test_rules.py:9, " in run.stdout and "test_rules.py:13" in run.stdout, run.stdout
    assert "StepDefinitionNotFoundError" in run.stdout, run.stdout
    marked = subprocess.run(
        [*command, "-m", "requirement", "--co"], cwd=tmp_path, capture_output=True, text=True
    )
    assert "1/3 tests collected (2 deselected)" in marked.stdout, marked.stdout
