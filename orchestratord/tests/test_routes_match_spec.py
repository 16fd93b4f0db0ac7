"""The routes the server serves and the routes in the OpenAPI document are the same (API-01)."""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from orchestratord.app import build
from orchestratord.config import OrchestratorConfig
from orchestratord.http.app import _starlette
from starlette.routing import Route

from specs import openapi_document


def test_served_routes_equal_documented_routes(tmp_path: Path) -> None:
    os.environ.setdefault("LLORCH_JOIN_TOKEN", "test")
    config = OrchestratorConfig(state_dir=str(tmp_path))
    services = build(config)
    app = _starlette(services.orchestrator, services.deployments, services.commands)
    served = {
        (route.path, method.lower())
        for route in app.routes
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    }
    paths = yaml.safe_load(openapi_document())["paths"]
    documented = {(path, method) for path, item in paths.items() for method in item}
    assert served == documented
