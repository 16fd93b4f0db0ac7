"""The session's secret scan (SEC-04) catches a planted secret in every form a leak takes,
names file and line, and never prints the secret itself."""

from __future__ import annotations

import base64
import json
import secrets
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from ci_harness import secret_scan


@pytest.fixture
def logs(tmp_path: Path) -> Iterator[Path]:
    """A folder for planted logs, emptied afterwards: it lies under the session's
    directory, which the session's own scan reads last."""
    root = tmp_path / "planted"
    root.mkdir()
    yield root
    for path in sorted(root.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()


def test_a_planted_secret_is_caught_in_each_form_with_file_and_line_and_shown_redacted(
    logs: Path,
) -> None:
    key = f"sk-{secrets.token_urlsafe(24)}"
    password = f"pass word/{secrets.token_hex(8)}+="  # percent-encoding changes it
    raw = key.encode()
    lines = [
        "nothing here",
        f"request headers: Authorization: Bearer {key}",
        json.dumps({"api_key": key}),
        f"url: /x?password={urllib.parse.quote(password, safe='')}&x=1",
        f"bytes: {raw.hex()}",
        *(f"blob: {base64.b64encode(b'p' * shift + raw + b'q').decode()}" for shift in range(3)),
        f"blob: {base64.urlsafe_b64encode(b'pp' + raw).decode()}",
    ]
    (logs / "daemon.log").write_text("\n".join(lines) + "\n")
    (logs / "daemon.log.1").write_text(f"rotated {key}\n")
    (logs / "config.yaml").write_text(f"not a log: {key}\n")
    (logs / "quiet.log").write_text("a clean log\n")

    known = {key: "client key", password: "password", "unused-secret-1": "other"}
    leaks, files = secret_scan.scan(logs, known)
    assert files == 3
    found = {(leak.path.name, leak.line): leak.form for leak in leaks}
    # base64url differs from base64 only where the encoding has + or /
    assert found.pop(("daemon.log", 9)) in {"base64", "base64url"}
    assert found == {
        ("daemon.log", 2): "as is, in 'Bearer <key>'",
        ("daemon.log", 3): "as is",
        ("daemon.log", 4): "percent-encoded",
        ("daemon.log", 5): "hex",
        ("daemon.log", 6): "base64",
        ("daemon.log", 7): "base64",
        ("daemon.log", 8): "base64",
        ("daemon.log.1", 1): "as is",
    }
    assert {leak.what for leak in leaks if leak.line == 4} == {"password"}
    for leak in leaks:
        shown = str(leak)
        assert f"{leak.path}:{leak.line}: a {leak.what}" in shown
        assert key not in shown and key[4:12] not in shown and password not in shown


def test_a_log_without_registered_secrets_passes_and_short_secrets_are_refused(
    logs: Path,
) -> None:
    (logs / "daemon.log").write_text("Authorization: Bearer nope\n")
    assert secret_scan.scan(logs, {"sk-something-else": "key"}) == ([], 1)
    with pytest.raises(ValueError, match="shorter than 12"):
        secret_scan.register("test", "join token")


def test_join_token_files_and_private_keys_are_discovered_as_secrets(logs: Path) -> None:
    (logs / "state").mkdir()
    (logs / "state" / "join-token").write_text("the-fleets-join-token\n")
    (logs / "state" / "api-keys").mkdir()
    (logs / "state" / "api-keys" / "admin").write_text("llorch-admin-0123456789\n")
    (logs / "state" / "api-keys" / "api-keys.yaml").write_text("- {name: up-admin}\n")
    cert = trustme.CA().issue_cert("h1")
    pem = cert.private_key_pem.bytes().decode()
    (logs / "state" / "h1.key").write_text(pem)
    found = secret_scan.discover(logs)
    assert found["the-fleets-join-token"] == "join token (join-token file)"
    assert found["llorch-admin-0123456789"] == "API key (admin key file)"
    assert not any("up-admin" in secret for secret in found)
    key_lines = secret_scan.pem_private_lines(pem)
    assert key_lines and all(found[line] == "TLS private key material" for line in key_lines)
    assert not any("PRIVATE KEY" in secret for secret in found)


def test_a_registered_secret_reaches_the_session_scan(logs: Path) -> None:
    key = secret_scan.new_api_key("test key")
    assert secret_scan.registered()[key] == "test key" and key.startswith("sk-")
    (logs / "leak.log").write_text(f"oops {key}\n")
    leaks, _ = secret_scan.scan(logs, secret_scan.registered())
    assert [(leak.line, leak.what) for leak in leaks] == [(1, "test key")]
    # the fixture removes leak.log before the session's own scan reads the folder
