"""The BDD harness fails on an unknown or an ambiguous step, and runs every feature (TST-03).

pytest-bdd fails a scenario whose step no definition matches (StepDefinitionNotFoundError;
shown below on a throw-away feature run in its own pytest). It does not fail one that
several definitions match: it takes one of them. So this module loads every step
definition of each BDD folder (`bdd_data`: the client-facing features; `bdd_ops`: the
operator-side ones, when present), and every step line of every scenario those folders
run (outlines rendered with each row of their examples), and asserts that each line
matches exactly one definition visible to it (its folder's conftest and its own test
module), of its step type. It also asserts that every `.feature` file under
`specs/features` is run by some test module: a feature nobody runs would be a silent gap.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
from pytest_bdd.parser import FeatureParser, Scenario, ScenarioTemplate
from pytest_bdd.scenario import scenario_wrapper_template_registry
from pytest_bdd.steps import StepFunctionContext, step_function_context_registry

ROOT = Path(__file__).resolve().parents[3]
FEATURES = ROOT / "specs" / "features"
BDD_DIRS = [Path(__file__).parent / name for name in ("bdd_data", "bdd_ops")]


@dataclass(frozen=True)
class Definition:
    where: str
    context: StepFunctionContext

    def matches(self, step_type: str, text: str) -> bool:
        kind = self.context.type
        return (kind is None or kind == step_type) and bool(self.context.parser.is_matching(text))


def load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while it runs
    spec.loader.exec_module(module)
    return module


def definitions(module: ModuleType, where: str) -> list[Definition]:
    """The step definitions a module declared (pytest-bdd injects each as a fixture)."""
    found = []
    for value in vars(module).values():
        wrapped = getattr(value, "__wrapped__", None)
        context = step_function_context_registry.get(wrapped) if wrapped is not None else None
        if context is not None:
            found.append(Definition(where, context))
    return found


def templates(module: ModuleType) -> list[ScenarioTemplate]:
    found = []
    for value in vars(module).values():
        try:
            template = scenario_wrapper_template_registry.get(value)
        except TypeError:  # not weakly referenceable: no scenario
            continue
        if template is not None:
            found.append(template)
    return found


def rendered(template: ScenarioTemplate) -> list[Scenario]:
    """The scenario as it runs: once per example row of an outline, else once."""
    contexts = [c for examples in template.examples for c in examples.as_contexts()]
    return [template.render(context) for context in contexts or [{}]]


def step_problems(scenarios: Iterable[Scenario], known: list[Definition]) -> list[str]:
    """Every step line that matches no definition or more than one, with where it is."""
    problems = []
    for scenario in scenarios:
        for step in scenario.steps:
            matching = [d for d in known if d.matches(step.type, step.name)]
            if len(matching) != 1:
                where = f"{Path(scenario.feature.filename).name}:{step.line_number}"
                names = [f"{d.where}: {d.context.parser.name!r}" for d in matching]
                kind = "no definition" if not matching else f"{len(matching)} definitions"
                problems.append(f"{where} {step.type} {step.name!r}: {kind} {names}")
    return problems


def bound_features() -> tuple[set[Path], list[str]]:
    """The feature files the BDD folders run, and the step problems found in them."""
    bound: set[Path] = set()
    problems: list[str] = []
    for folder in BDD_DIRS:
        if not folder.is_dir():
            continue
        shared = []
        if (folder / "conftest.py").exists():
            conftest = load(folder / "conftest.py", f"_stepcheck_{folder.name}_conftest")
            shared = definitions(conftest, f"{folder.name}/conftest.py")
        for path in sorted(folder.glob("test_*.py")):
            module = load(path, f"_stepcheck_{folder.name}_{path.stem}")
            own = definitions(module, f"{folder.name}/{path.name}")
            for template in templates(module):
                bound.add(Path(template.feature.filename).resolve())
                problems += step_problems(rendered(template), shared + own)
    return bound, problems


def test_every_step_line_of_every_feature_matches_exactly_one_definition() -> None:
    bound, problems = bound_features()
    assert bound, "no BDD test module binds a feature"
    assert not problems, "\n".join(problems)


def test_every_feature_file_is_run_by_a_bdd_test_module() -> None:
    bound, _ = bound_features()
    features = {path.resolve() for path in FEATURES.rglob("*.feature")}
    assert features, "no feature files"
    assert features <= bound, sorted(str(p.relative_to(ROOT)) for p in features - bound)


# --- the checks can fail ----------------------------------------------------------------

FEATURE = """\
Feature: A throw-away feature
  Scenario: Three steps
    Given a cluster with 2 pools
    When I submit a task
    Then nothing is defined for this one
"""


def synthetic_steps() -> list[Definition]:
    """Three definitions, two of which match one line."""
    module = ModuleType("_stepcheck_synthetic")
    source = textwrap.dedent(
        """
        from pytest_bdd import given, parsers, when

        @given(parsers.parse("a cluster with {count:d} pools"))
        def _(count: int) -> None: ...

        @given(parsers.re(r"a cluster with (?P<what>.+)"))
        def _(what: str) -> None: ...

        @when("I submit a task")
        def _() -> None: ...
        """
    )
    exec(compile(source, "<synthetic steps>", "exec"), module.__dict__)
    return definitions(module, "synthetic")


def test_the_check_names_a_step_that_two_definitions_match_and_one_that_none_does(
    tmp_path: Path,
) -> None:
    (tmp_path / "x.feature").write_text(FEATURE)
    feature = FeatureParser(str(tmp_path), "x.feature").parse()
    scenarios = [s for t in feature.scenarios.values() for s in rendered(t)]
    problems = step_problems(scenarios, synthetic_steps())
    assert len(problems) == 2, problems
    assert "x.feature:3 given 'a cluster with 2 pools': 2 definitions" in problems[0]
    assert "x.feature:5 then 'nothing is defined for this one': no definition" in problems[1]


def test_a_step_of_another_type_does_not_count_as_a_match(tmp_path: Path) -> None:
    (tmp_path / "x.feature").write_text(FEATURE.replace("When I submit", "Given I submit"))
    feature = FeatureParser(str(tmp_path), "x.feature").parse()
    scenarios = [s for t in feature.scenarios.values() for s in rendered(t)]
    problems = step_problems(scenarios, synthetic_steps())
    assert any("given 'I submit a task': no definition" in p for p in problems), problems


def test_an_unknown_step_fails_the_run(tmp_path: Path) -> None:
    """pytest-bdd itself, in a pytest of its own: a step with no definition fails."""
    (tmp_path / "x.feature").write_text(FEATURE)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_x.py").write_text(
        textwrap.dedent(
            """
            from pytest_bdd import given, parsers, scenarios, when

            scenarios("x.feature")

            @given(parsers.parse("a cluster with {count:d} pools"))
            def _(count: int) -> None: ...

            @when("I submit a task")
            def _() -> None: ...
            """
        )
    )
    plugins = ["-p", "pytest_bdd.plugin", "-p", "no:cacheprovider"]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", *plugins, "-q", str(tmp_path)],
        cwd=tmp_path,
        env={**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},  # pytest-bdd alone: quick
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "StepDefinitionNotFoundError" in done.stdout, done.stdout
    assert 'Step definition is not found: Then "nothing is defined for this one"' in done.stdout


@pytest.mark.parametrize("folder", [d for d in BDD_DIRS if d.is_dir()], ids=lambda d: d.name)
def test_each_bdd_folder_declares_its_steps_in_its_conftest_or_test_modules(folder: Path) -> None:
    """Sanity: the loader finds definitions where the folders keep them."""
    found = []
    if (folder / "conftest.py").exists():
        found += definitions(load(folder / "conftest.py", f"_sanity_{folder.name}"), "conftest")
    for path in folder.glob("test_*.py"):
        found += definitions(load(path, f"_sanity_{folder.name}_{path.stem}"), path.name)
    assert found, f"no step definitions found in {folder}"
