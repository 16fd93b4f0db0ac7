"""The rules of a BDD run (TST-03), as pytest hooks a conftest imports (pytest finds
hooks in a conftest by name).

- A requirement tag (`@POOL-04`, the ID exactly as REQUIREMENTS.md writes it) becomes a
  `requirement` mark carrying the ID, so the scenarios that evidence an ID can be
  selected and reported; other tags are left to pytest-bdd.
- A step that more than one visible step definition matches is an error before the
  scenario runs: pytest-bdd itself would silently take the nearest definition.
- A step that no definition matches fails the scenario (pytest-bdd's own
  `StepDefinitionNotFoundError`; nothing to add).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from pytest_bdd.parser import Feature, Scenario
from pytest_bdd.scenario import find_fixturedefs_for_step
from pytest_bdd.steps import StepFunctionContext, step_function_context_registry

__all__ = [
    "REQUIREMENT_TAG",
    "ambiguous_steps",
    "pytest_bdd_apply_tag",
    "pytest_bdd_before_scenario",
    "pytest_configure",
]

REQUIREMENT_TAG = re.compile(r"[A-Z]{2,5}-\d{2}")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "requirement(id): the scenario evidences this requirement (REQUIREMENTS.md)"
    )


@pytest.hookimpl(tryfirst=True)  # before pytest-bdd's own, which marks every tag
def pytest_bdd_apply_tag(tag: str, function: Callable[..., object]) -> object:
    """`@POOL-04` → `@pytest.mark.requirement("POOL-04")`; other tags: pytest-bdd's way."""
    if REQUIREMENT_TAG.fullmatch(tag):
        return pytest.mark.requirement(tag)(function)
    return None


def ambiguous_steps(request: pytest.FixtureRequest, scenario: Scenario) -> list[str]:
    """Each step of the scenario that more than one visible definition matches."""
    found = []
    for step in scenario.steps:
        defs = list(find_fixturedefs_for_step(step, request._fixturemanager, request.node))
        if len(defs) > 1:
            where = ", ".join(_where(step_function_context_registry[d.func]) for d in defs)
            found.append(f"{step.keyword} {step.name!r} matches {len(defs)} definitions: {where}")
    return found


def _where(context: StepFunctionContext) -> str:
    code = context.step_func.__code__
    return f"{code.co_filename}:{code.co_firstlineno}"


def pytest_bdd_before_scenario(
    request: pytest.FixtureRequest, feature: Feature, scenario: Scenario
) -> None:
    ambiguous = ambiguous_steps(request, scenario)
    if ambiguous:
        pytest.fail("ambiguous steps:\n" + "\n".join(ambiguous), pytrace=False)
