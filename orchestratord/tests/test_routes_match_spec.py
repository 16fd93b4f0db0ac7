"""The routes the server serves and the routes in the OpenAPI document are the same (API-01)."""

from __future__ import annotations

import os

import yaml
from adapter_host import AdapterHost
from orchestratord.config import OrchestratorConfig
from orchestratord.core import Orchestrator
from orchestratord.http.app import _starlette
from orchestratord.registry import PoolRegistry
from starlette.routing import Route

from specs import openapi_document


def test_served_routes_equal_documented_routes() -> None:
    os.environ.setdefault("LLORCH_JOIN_TOKEN", "test")
    config = OrchestratorConfig()
    orchestrator = Orchestrator(config, PoolRegistry(lease_s=6, suspect_ttl_s=4), AdapterHost())
    served = {
        (route.path, method.lower())
        for route in _starlette(orchestrator).routes
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    }
    paths = yaml.safe_load(openapi_document())["paths"]
    documented = {(path, method) for path, item in paths.items() for method in item}
    assert served == documented
