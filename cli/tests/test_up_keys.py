"""`llorch up` with its HTTP API off loopback makes an admin and a client key (SEC-01,
SEC-05), keeps them, prints them, and gives the orchestrator only their digests."""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import pytest
import yaml
from ci_harness import secret_scan
from llorch import up
from orchestratord.config import load_config
from orchestratord.quotas import Quotas


def test_up_makes_an_admin_and_a_client_key_kept_across_restarts_and_stored_hashed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = up._api_keys(tmp_path)
    for role, key in keys.items():
        secret_scan.register(key, f"llorch up {role} key")
    assert set(keys) == {"admin", "client"} and keys["admin"] != keys["client"]
    assert all(len(key) >= 40 for key in keys.values())
    folder = tmp_path / "api-keys"
    assert {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir()} == {
        "admin": 0o600,
        "client": 0o600,
        "api-keys.yaml": 0o600,
    }
    assert up._api_keys(tmp_path) == keys  # the same keys after a restart
    listed = (folder / "api-keys.yaml").read_text()
    assert not any(key in listed for key in keys.values())
    monkeypatch.setenv("LLORCH_JOIN_TOKEN", "test-token")
    config = load_config(None, api_keys_file=str(folder / "api-keys.yaml"), http_host="0.0.0.0")
    quotas = Quotas(config.api_keys)
    for role, key in keys.items():
        found = quotas.identify(key)
        assert found is not None and found.role == role
    assert [entry["key_sha256"] for entry in yaml.safe_load(listed)] == [
        hashlib.sha256(keys[role].encode()).hexdigest() for role in ("admin", "client")
    ]


def test_the_orchestrator_config_names_the_made_keys_and_the_banner_prints_them(
    tmp_path: Path,
) -> None:
    keys = {"admin": "llorch-admin-" + "a" * 43, "client": "llorch-client-" + "c" * 43}
    args = argparse.Namespace(
        http_host="192.0.2.1",
        port=0,
        listen="127.0.0.1",
        control_port=0,
        state_dir=tmp_path,
        api_keys_file=None,
    )
    path = up._orchestrator_config(args, tmp_path, {}, keys)
    settings = yaml.safe_load(path.read_text())
    assert settings["api_keys_file"] == str(tmp_path / "api-keys" / "api-keys.yaml")
    assert keys["admin"] not in path.read_text()

    banner = up._banner("http://192.0.2.1:8080", keys, None)
    assert f"admin  (deployments, drain, reload, cordon): {keys['admin']}" in banner
    assert f"client (jobs and reads):                     {keys['client']}" in banner
    assert f"-H 'Authorization: Bearer {keys['client']}'" in banner
    assert f"export LLORCH_API_KEY={keys['admin']}" in banner
    open_banner = up._banner("http://127.0.0.1:8080", {}, None)
    assert "Authorization" not in open_banner and "API keys" not in open_banner
    given = up._banner("http://192.0.2.1:8080", {}, Path("/etc/llorch/keys.yaml"))
    assert "Bearer $LLORCH_API_KEY" in given and "/etc/llorch/keys.yaml" in given
