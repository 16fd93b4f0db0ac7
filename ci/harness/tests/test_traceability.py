"""The traceability report (TST-08): requirement IDs to the scenarios tagged with them,
and a reason for each uncovered ID; every inconsistency is a problem that fails
`ci/gen-traceability --check`."""

from __future__ import annotations

import importlib.machinery
import importlib.util
from pathlib import Path
from types import ModuleType

from ci_harness.traceability import (
    Requirement,
    ScenarioRef,
    parse_requirements,
    render,
    trace,
)

ROOT = Path(__file__).resolve().parents[3]
LIST = """\
# requirements

## API
- API-01 The contract is served.
  It continues here.
- API-02 Tasks are accepted.
Not a bullet: API-03 is mentioned in passing.
- ADM-01 Bounded queues.
"""
REQUIREMENTS = parse_requirements(LIST)


def scenario(name: str, *tags: str, feature: str = "specs/features/x.feature") -> ScenarioRef:
    return ScenarioRef(feature, name, frozenset(tags))


def test_the_list_is_read_bullet_by_bullet_in_its_order() -> None:
    listed = parse_requirements(LIST)
    assert listed == [
        Requirement("API-01", "The contract is served. It continues here."),
        Requirement("API-02", "Tasks are accepted."),
        Requirement("ADM-01", "Bounded queues."),
    ]


def test_each_id_maps_to_the_scenarios_tagged_with_it_and_other_tags_are_ignored() -> None:
    first = scenario("Submit", "API-01", "API-02", "slow")
    second = scenario("Again", "API-02", feature="specs/features/y.feature")
    report = trace(REQUIREMENTS, [first, second], {"ADM-01": "pure policy, unit-tested"})
    assert report.problems == []
    assert report.covered == {"API-01": [first], "API-02": [first, second]}
    assert report.uncovered == {"ADM-01": "pure policy, unit-tested"}


def test_an_uncovered_id_without_a_reason_is_a_problem() -> None:
    report = trace(REQUIREMENTS, [scenario("S", "API-01", "API-02")], {"ADM-01": "  "})
    assert report.problems == ["ADM-01 has no scenario and uncovered.yaml gives no reason for it"]


def test_a_tag_naming_an_unknown_id_is_a_problem() -> None:
    tagged = [scenario("S", "API-01", "API-02", "API-99")]
    report = trace(REQUIREMENTS, tagged, {"ADM-01": "why"})
    assert len(report.problems) == 1
    assert "scenario 'S' is tagged @API-99" in report.problems[0]
    assert report.covered["API-01"] == tagged  # the known tags still count


def test_a_reason_for_a_covered_id_or_an_unknown_one_is_a_problem() -> None:
    reasons = {"ADM-01": "why", "API-01": "stale", "XYZ-01": "typo"}
    report = trace(REQUIREMENTS, [scenario("S", "API-01", "API-02")], reasons)
    assert report.problems == [
        "API-01 is covered by scenarios but uncovered.yaml gives a reason for it: remove its entry",
        "uncovered.yaml gives a reason for XYZ-01, which is not in the list",
    ]


def test_a_reason_naming_a_file_that_does_not_exist_is_a_problem() -> None:
    reasons = {"ADM-01": "see orchestratord/tests/test_admission.py and a/b/gone.py"}
    report = trace(
        REQUIREMENTS,
        [scenario("S", "API-01", "API-02")],
        reasons,
        exists=lambda path: path != "a/b/gone.py",
    )
    assert report.problems == ["the reason for ADM-01 names a/b/gone.py, which does not exist"]


def test_duplicate_ids_in_the_list_are_a_problem() -> None:
    doubled = parse_requirements(LIST + "- API-02 Again.\n")
    report = trace(doubled, [scenario("S", "API-01", "API-02")], {"ADM-01": "why"})
    assert report.problems == ["the requirement list has duplicate IDs: ['API-02']"]


def test_the_page_lists_every_id_with_its_scenarios_or_its_reason() -> None:
    report = trace(
        REQUIREMENTS,
        [scenario("Submit | stream", "API-01", "API-02")],
        {"ADM-01": "pure policy"},
    )
    page = render(report)
    assert "2 of 3 requirements are evidenced by scenarios; 1 are not" in page
    assert (
        "| **API-01** The contract is served. It continues here. "
        "| `specs/features/x.feature`: Submit \\| stream |" in page
    )
    assert "| **ADM-01** Bounded queues. | *none: see below* |" in page
    assert "| **ADM-01** | pure policy |" in page
    long = Requirement("API-09", "Lists `GET /v2/meta/capabilities` " + "x" * 100)
    listed = render(trace([long], [], {"API-09": "why"}))
    assert "| **API-09** Lists `GET /v2/meta/capabilities` xxx" in listed
    cut = trace([Requirement("API-09", "a" * 80 + " `GET /v2/meta/capabilities`")], [], {})
    assert "| **API-09** " + "a" * 80 + "… |" in render(cut)  # never inside a code span


def test_the_checked_in_list_is_the_projects_97_requirements_each_once() -> None:
    listed = parse_requirements((ROOT / "specs/requirements/REQUIREMENTS.md").read_text())
    ids = [r.id for r in listed]
    assert len(ids) == len(set(ids)) == 97
    assert {"API-01", "TST-08", "PERF-04", "CAT-05", "SEC-05"} <= set(ids)


def generator() -> ModuleType:
    """`ci/gen-traceability` as a module (it has no .py suffix)."""
    path = ROOT / "ci" / "gen-traceability"
    loader = importlib.machinery.SourceFileLoader("gen_traceability", str(path))
    spec = importlib.util.spec_from_loader("gen_traceability", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_a_tag_on_a_feature_a_rule_or_examples_applies_to_the_scenarios_within(
    tmp_path: Path,
) -> None:
    (tmp_path / "area").mkdir()
    (tmp_path / "area" / "x.feature").write_text(
        """\
@API-01
Feature: Tags at every level
  @API-02
  Scenario: Plain
    Given a step

  Scenario Outline: An outline
    Given a step <n>

    @API-02
    Examples:
      | n |
      | 1 |

  @ADM-01
  Rule: A rule
    Scenario: Under the rule
      Given a step
"""
    )
    found = {s.name: s for s in generator().scenarios(tmp_path, tmp_path)}
    assert found["Plain"] == scenario("Plain", "API-01", "API-02", feature="area/x.feature")
    assert found["Under the rule"].tags == {"API-01", "ADM-01"}
    assert found["An outline"].tags == {"API-01", "API-02"}
