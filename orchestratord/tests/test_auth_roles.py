"""API key roles (SEC-05): one table says which route needs which role, and it covers
every route the app serves, as the OpenAPI document's `security` says."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
import yaml
from orchestratord.app import build
from orchestratord.config import ConfigError, OrchestratorConfig, load_config
from orchestratord.http.app import _starlette
from orchestratord.http.auth import ROUTE_ROLES, authorize, required_role
from orchestratord.quotas import ApiKey, Role, permits
from starlette.routing import Route

from specs import openapi_document

DIGEST = hashlib.sha256(b"k").hexdigest()
# SEC-05: what changes the fleet. A new route of this kind must be added here too.
ADMIN_ROUTES = {
    ("PUT", "/v2/deployments/{name}"),
    ("DELETE", "/v2/deployments/{name}"),
    ("POST", "/v2/pools/{pool_id}/drain"),
    ("POST", "/v2/pools/{pool_id}/undrain"),
    ("POST", "/v2/pools/{pool_id}/reload"),
    ("GET", "/v2/pools/{pool_id}/logs"),  # an engine log may quote what it served
    ("POST", "/v2/hosts/{host_id}/cordon"),
    ("POST", "/v2/catalog/models/{model_id}/verify"),
    ("POST", "/v2/catalog/models/{model_id}/state"),
}
OPEN_ROUTES = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/openapi.yaml"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/assets/{name}"),
    ("GET", "/metrics"),
    ("GET", "/"),  # the status page and its files: no data (OBS-04)
    ("GET", "/ui"),
    ("GET", "/ui/{asset}"),
}


@pytest.fixture(autouse=True)
def _join_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLORCH_JOIN_TOKEN", "test")


def _served(tmp_path: Path) -> set[tuple[str, str]]:
    services = build(OrchestratorConfig(state_dir=str(tmp_path)))
    app = _starlette(services.orchestrator, services.deployments, services.commands)
    return {
        (method, route.path)
        for route in app.routes
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    }


def _documented() -> dict[tuple[str, str], Role | None]:
    document = yaml.safe_load(openapi_document())
    default = document["security"]
    roles: dict[tuple[str, str], Role | None] = {}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            security = operation.get("security", default)
            scopes = {scope for requirement in security for scope in requirement.get("apiKey", [])}
            role: Role | None = None if not security else "admin" if "admin" in scopes else "client"
            roles[(method.upper(), path)] = role
    return roles


def _concrete(route: str) -> str:
    return re.sub(r"\{[^}]+\}", "x-1", route)


def test_the_role_table_has_exactly_one_entry_for_every_route_the_app_serves(
    tmp_path: Path,
) -> None:
    table = [(method, route) for method, route, _ in ROUTE_ROLES]
    assert len(table) == len(set(table)), "a route is in the table twice"
    assert set(table) == _served(tmp_path)


def test_the_role_table_is_the_openapi_documents_security() -> None:
    assert {(m, p): r for m, p, r in ROUTE_ROLES} == _documented()


def test_fleet_changes_need_admin_ops_endpoints_are_open_and_the_rest_needs_a_client_key() -> None:
    for method, route, role in ROUTE_ROLES:
        expected = (
            "admin"
            if (method, route) in ADMIN_ROUTES
            else None
            if (method, route) in OPEN_ROUTES
            else "client"
        )
        assert role == expected, (method, route)
        # what the middleware asks for a concrete request on that route (HEAD is GET)
        assert required_role(method, _concrete(route)) == expected, (method, route)
        if method == "GET":
            assert required_role("HEAD", _concrete(route)) == expected, route


def test_unknown_paths_need_an_admin_key_and_a_wrong_method_the_paths_weakest_role() -> None:
    assert required_role("GET", "/v2/nothing-here") == "admin"
    assert required_role("POST", "/v2/pools/p1/drain/extra") == "admin"
    assert required_role("GET", "/v2/pools/p1/drain") == "admin"  # 405, for admins only
    assert required_role("PATCH", "/v2/deployments/d1") == "client"  # 405 to a client
    assert required_role("POST", "/healthz") is None  # 405, open as the path is
    # Starlette's `[^/]+$` also matches before a final newline (a decoded %0A): so do we
    assert required_role("POST", "/v2/pools/p1/drain\n") == "admin"


def test_an_admin_key_may_do_what_a_client_key_may_and_not_the_reverse() -> None:
    assert permits("admin", "admin") and permits("admin", "client")
    assert permits("client", "client") and not permits("client", "admin")


def test_a_wrong_role_is_forbidden_naming_the_role_needed_and_never_the_key() -> None:
    client = ApiKey("app", DIGEST, role="client")
    refusal = authorize(client, "admin")
    assert refusal is not None and refusal.code == "FORBIDDEN" and refusal.status == 403
    assert "role admin" in refusal.message and "'app'" in refusal.message
    assert DIGEST not in refusal.message
    missing = authorize(None, "client")
    assert missing is not None and missing.code == "UNAUTHORIZED" and missing.status == 401
    assert authorize(client, "client") is None
    assert authorize(ApiKey("ops", DIGEST, role="admin"), "admin") is None


def test_api_keys_take_a_role_and_one_without_is_a_client_key(tmp_path: Path) -> None:
    keys = tmp_path / "keys.yaml"
    keys.write_text(
        yaml.safe_dump(
            [
                {"name": "ops", "key_sha256": DIGEST, "role": "admin"},
                {"name": "app", "key_sha256": DIGEST, "role": "client"},
                {"name": "old", "key_sha256": DIGEST},
            ]
        )
    )
    config = load_config(None, api_keys_file=str(keys), state_dir=str(tmp_path))
    assert [(k.name, k.role) for k in config.api_keys] == [
        ("ops", "admin"),
        ("app", "client"),
        ("old", "client"),
    ]


@pytest.mark.parametrize("role", ["root", "Admin", "", None, ["admin"]])
def test_an_unknown_role_is_a_config_error_naming_the_entry(tmp_path: Path, role: object) -> None:
    entry = {"name": "ops", "key_sha256": DIGEST, "role": role}
    with pytest.raises(ConfigError, match=r"api_keys\[0\]\.role: expected 'admin' or 'client'"):
        load_config(None, api_keys=[entry], state_dir=str(tmp_path))
