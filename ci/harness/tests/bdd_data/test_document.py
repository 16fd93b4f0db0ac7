"""The scenarios of `specs/features/api/document.feature`,
on the shared cluster (see conftest)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
import yaml
from ci_harness.bdd import World
from pytest_bdd import parsers, scenarios, then, when

from specs import openapi_document

pytestmark = pytest.mark.integration

scenarios(str(Path(__file__).resolve().parents[4] / "specs/features/api/document.feature"))


@when(parsers.parse('I fetch "{path}"'))
def _(world: World, path: str) -> None:
    with world.client() as client:
        world.response = client.get(path)


@then(parsers.parse('the answer is {status:d} of type "{media_type}"'))
def _(world: World, status: int, media_type: str) -> None:
    assert world.response is not None and world.response.status_code == status, world.response
    assert world.response.headers["content-type"].startswith(media_type), world.response.headers
    world.values[media_type] = world.response


@then("it is the contract checked in as specs/openapi/llorch.yaml")
def _(world: World) -> None:
    assert world.response is not None
    assert world.response.content == openapi_document()


@then("it is the same document as the YAML, declaring bearer authentication")
def _(world: World) -> None:
    served = world.envelope()
    assert served == yaml.safe_load(world.values["application/yaml"].content)
    schemes = served["components"]["securitySchemes"]
    assert schemes["apiKey"]["type"] == "http" and schemes["apiKey"]["scheme"] == "bearer"


@then("every script, stylesheet and image the page names is served by the orchestrator")
def _(world: World) -> None:
    assert world.response is not None
    html = world.response.text
    assert not re.search(r"https?://|//[a-z0-9]", html, re.IGNORECASE), html  # nothing remote
    policy = world.response.headers["content-security-policy"]
    assert "default-src 'self'" in policy, policy
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert len(assets) >= 3, html  # the bundle, its stylesheet, the page's own script
    page = httpx.URL(f"{world.cluster.url}/docs")
    with world.client() as client:
        for asset in assets:
            response = client.get(str(page.join(asset)))  # as a browser resolves it
            assert response.status_code == 200 and response.content, asset
