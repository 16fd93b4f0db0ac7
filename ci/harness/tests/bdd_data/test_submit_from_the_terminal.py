"""The scenarios of `specs/features/cli/submit_from_the_terminal.feature`, on the shared
cluster (see conftest): the real `llorch` command in a subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from ci_harness.bdd import World
from pytest_bdd import parsers, scenarios, then, when

pytestmark = pytest.mark.integration

scenarios(
    str(Path(__file__).resolve().parents[4] / "specs/features/cli/submit_from_the_terminal.feature")
)


def llorch(world: World, *args: str, key: str | None) -> None:
    command = [sys.executable, "-m", "llorch", *args, "--url", world.cluster.url]
    if key is not None:
        command += ["--api-key", key]
    world.values["run"] = subprocess.run(
        command, capture_output=True, text=True, timeout=120, check=False
    )


@when(parsers.parse('I run llorch submit "{prompt}" for {count:d} tokens with the client key'))
def _(world: World, prompt: str, count: int, client_key: str) -> None:
    llorch(world, "submit", "--max-tokens", str(count), "--seed", "5", prompt, key=client_key)


@when(parsers.parse('I run llorch submit "{prompt}" for model "{model}" with the client key'))
def _(world: World, prompt: str, model: str, client_key: str) -> None:
    llorch(world, "submit", "--model", model, prompt, key=client_key)


@when("I run llorch caps with the client key")
def _(world: World, client_key: str) -> None:
    llorch(world, "caps", key=client_key)


@when("I run llorch caps with no key")
def _(world: World) -> None:
    llorch(world, "caps", key=None)


@then("the command succeeds and prints the generated text")
def _(world: World) -> None:
    run = world.values["run"]
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip(), run.stdout


@then(parsers.parse("it reports {count:d} tokens and the time to the first token"))
def _(world: World, count: int) -> None:
    stderr = world.values["run"].stderr
    assert f"{count} tokens" in stderr and "ttft" in stderr, stderr


@then(parsers.parse('the command exits with code {code:d} and says "{words}"'))
def _(world: World, code: int, words: str) -> None:
    run = world.values["run"]
    assert run.returncode == code, (run.returncode, run.stdout, run.stderr)
    assert words in run.stderr, run.stderr


@then(parsers.parse('the command succeeds and prints "{first}", "{second}" and "{third}"'))
def _(world: World, first: str, second: str, third: str) -> None:
    run = world.values["run"]
    assert run.returncode == 0, run.stderr
    assert all(word in run.stdout for word in (first, second, third)), run.stdout
