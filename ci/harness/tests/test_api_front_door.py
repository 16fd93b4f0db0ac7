"""The API's front door over a real orchestrator with API keys and a real pool (issue 14
item 3): the document served as YAML and JSON, a documentation page that loads with no
network (every asset from the server itself), and on the OpenAI facade every error in
OpenAI's shape, whichever layer refused the request, as the official `openai` client
reads it (exception class, `.code`, `.type`), with `X-Correlation-Id` on each response;
`/v2` keeps llorch's envelope."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import struct
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from ci_harness import secret_scan
from ci_harness.cluster import Cluster, tiny_pool

from specs import openapi_document

pytestmark = pytest.mark.integration
CLIENT_KEY = secret_scan.new_api_key()
ADMIN_KEY = secret_scan.new_api_key("admin key")
LIMITED_KEY = secret_scan.new_api_key("limited key")
MAX_BODY_BYTES = 64 << 10
READ_TIMEOUT_S = 1.5
ASSET_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".png": "image/png",
}


def _key(name: str, key: str, role: str, **limits: int) -> dict[str, Any]:
    return {
        "name": name,
        "key_sha256": hashlib.sha256(key.encode()).hexdigest(),
        "role": role,
        **limits,
    }


@pytest.fixture(scope="module")
def cluster(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    keys = [
        _key("app", CLIENT_KEY, "client"),
        _key("operator", ADMIN_KEY, "admin"),
        _key("limited", LIMITED_KEY, "client", requests_per_minute=1),
    ]
    cluster = Cluster(
        tmp_path_factory.mktemp("front-door"),
        {"host-a": [tiny_pool("tiny-a", tiny_model, embeddings=True, slots=2)]},
        {
            "api_keys": keys,
            "max_body_bytes": MAX_BODY_BYTES,
            "http_request_read_timeout_s": READ_TIMEOUT_S,
        },
        {},
        {"Authorization": f"Bearer {ADMIN_KEY}"},
    )
    cluster.start()
    yield cluster
    assert all(code == 0 for code in cluster.stop().values()), cluster.logs()


def _client(cluster: Cluster, key: str = CLIENT_KEY, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{cluster.url}/v1", api_key=key, max_retries=0, default_headers=headers
    )


def _openai_error(response: httpx.Response) -> dict[str, Any]:
    """The body of an error in OpenAI's shape (and nothing of llorch's envelope)."""
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert response.headers.get("x-correlation-id"), response.headers
    return error


# --- the document and its page ------------------------------------------------------


def test_the_document_is_served_as_yaml_and_as_the_same_json_to_anyone(cluster: Cluster) -> None:
    with httpx.Client(base_url=cluster.url, timeout=10) as http:  # no key at all
        as_yaml = http.get("/openapi.yaml")
        as_json = http.get("/openapi.json")
    assert as_yaml.status_code == as_json.status_code == 200
    assert as_yaml.headers["content-type"].startswith("application/yaml")
    assert as_json.headers["content-type"].startswith("application/json")
    assert as_yaml.content == openapi_document()
    assert as_json.json() == yaml.safe_load(openapi_document())
    schemes = as_json.json()["components"]["securitySchemes"]
    assert schemes["apiKey"] == {**schemes["apiKey"], "type": "http", "scheme": "bearer"}


def test_the_docs_page_loads_every_asset_from_the_server_and_nothing_from_elsewhere(
    cluster: Cluster,
) -> None:
    with httpx.Client(base_url=cluster.url, timeout=10) as http:
        page = http.get("/docs")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        # and the browser is told to load nothing from anywhere else
        policy = page.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "script-src 'self'" in policy, policy
        html = page.text
        assert not re.search(r"https?://|//[a-z0-9]", html, re.IGNORECASE), html
        assets = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert len(assets) >= 3, html  # the bundle, its stylesheet, the page's script
        scripts: list[str] = []
        for asset in assets:
            # relative to /docs, as a browser resolves it
            response = http.get(str(httpx.URL(f"{cluster.url}/docs").join(asset)))
            assert response.status_code == 200, (asset, response.text)
            wanted = ASSET_TYPES[Path(asset).suffix]
            assert response.headers["content-type"].startswith(wanted), asset
            assert response.content, asset
            if asset.endswith(".js"):
                scripts.append(response.text)
        bundle, ours = scripts
        assert "SwaggerUIBundle" in bundle and len(bundle) > 500_000
        # The page's own script points Swagger UI at the served JSON, with no validator
        # (that would be a request to validator.swagger.io).
        assert not re.search(r"https?://", ours), ours
        url = re.search(r'url:\s*"([^"]+)"', ours)
        assert url is not None and "validatorUrl: null" in ours, ours
        document = http.get(str(httpx.URL(f"{cluster.url}/docs").join(url.group(1))))
        assert document.status_code == 200
        assert document.json()["openapi"].startswith("3.1")
        licence = http.get("/docs/assets/LICENSE")
        assert licence.status_code == 200 and "Apache License" in licence.text
        other = http.get("/docs/assets/swagger-editor-bundle.js")  # in the package, not listed
        assert other.status_code == 404 and other.json()["code"] == "NOT_FOUND"


def test_a_method_a_path_does_not_serve_is_405_with_allow_in_the_paths_shape(
    cluster: Cluster,
) -> None:
    with httpx.Client(base_url=cluster.url, timeout=10, headers=cluster.headers) as http:
        docs = http.post("/docs")
        session = http.put("/v2/sessions/s1")
        chat = http.get("/v1/chat/completions")
    assert docs.status_code == session.status_code == chat.status_code == 405
    assert docs.headers["allow"] == "GET, HEAD"
    assert session.headers["allow"] == "DELETE, GET, HEAD"  # both routes of the path
    assert docs.json()["code"] == session.json()["code"] == "INVALID_PARAMS"
    assert chat.headers["allow"] == "POST"
    assert _openai_error(chat)["code"] == "INVALID_PARAMS"


def _status(http: httpx.Client, method: str, path: str, headers: dict[str, str]) -> int:
    """The status of a request, read without its body (a stream may never end)."""
    with http.stream(method.upper(), path, headers=headers) as response:
        return response.status_code


def test_every_operation_enforces_exactly_the_security_the_document_declares(
    cluster: Cluster,
) -> None:
    """No key: 401 exactly where `security` is not empty. A client key: 403 exactly where
    it names the admin role. Each request is one no handler acts on (no body, or an id
    nothing has), so nothing changes."""
    document = yaml.safe_load(openapi_document())
    checked = 0
    with httpx.Client(base_url=cluster.url, timeout=30) as http:
        for path, item in document["paths"].items():
            concrete = re.sub(r"\{[^}]+\}", "x-1", path)
            for method, operation in item.items():
                security = operation.get("security", document["security"])
                scopes = {s for requirement in security for s in requirement.get("apiKey", [])}
                anonymous = _status(http, method, concrete, {})
                assert (anonymous == 401) == bool(security), (method, path)
                client = _status(http, method, concrete, {"Authorization": f"Bearer {CLIENT_KEY}"})
                assert (client == 403) == ("admin" in scopes), (method, path)
                assert client != 401, (method, path)
                checked += 1
    assert checked == sum(len(item) for item in document["paths"].values()) >= 35


# --- /v1 errors in OpenAI's shape -----------------------------------------------------


def test_a_missing_or_unknown_key_on_v1_is_an_authentication_error(cluster: Cluster) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        _client(cluster, key="not-a-key").chat.completions.create(
            model="default", messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
    assert caught.value.status_code == 401
    assert caught.value.code == "UNAUTHORIZED" and caught.value.type == "authentication_error"
    assert caught.value.response.headers.get("x-correlation-id")
    with httpx.Client(base_url=cluster.url, timeout=10) as http:  # no Authorization
        assert _openai_error(http.get("/v1/models"))["type"] == "authentication_error"
        v2 = http.get("/v2/pools")
    assert v2.status_code == 401 and v2.json()["code"] == "UNAUTHORIZED"  # llorch's envelope
    assert v2.json()["correlation_id"] == v2.headers["x-correlation-id"]


def test_a_client_key_on_an_unknown_v1_path_is_a_permission_error(cluster: Cluster) -> None:
    with httpx.Client(base_url=cluster.url, timeout=10) as http:
        forbidden = http.get("/v1/files", headers={"Authorization": f"Bearer {CLIENT_KEY}"})
        missing = http.get("/v1/files", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert forbidden.status_code == 403
    assert _openai_error(forbidden) | {"message": ""} == {
        "message": "",
        "type": "permission_error",
        "param": None,
        "code": "FORBIDDEN",
    }
    assert missing.status_code == 404
    assert _openai_error(missing)["code"] == "NOT_FOUND"
    assert CLIENT_KEY not in forbidden.text


def test_a_malformed_correlation_id_on_v1_is_a_bad_request_with_a_fresh_id(
    cluster: Cluster,
) -> None:
    client = _client(cluster, **{"X-Correlation-Id": "not a valid id!"})
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="default", prompt="x", max_tokens=2)
    assert caught.value.code == "INVALID_PARAMS" and caught.value.type == "invalid_request_error"
    assert "X-Correlation-Id" in caught.value.message
    fresh = caught.value.response.headers["x-correlation-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", fresh), fresh


def test_an_unknown_model_and_a_bad_field_are_typed_errors_naming_what(
    cluster: Cluster,
) -> None:
    client = _client(cluster)
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
    assert missing.value.code == "MODEL_NOT_FOUND"
    assert missing.value.type == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(
            model="default", messages=[{"role": "user", "content": "hi"}], max_tokens=2, n=2
        )
    assert bad.value.code == "INVALID_PARAMS" and bad.value.param == "n"


def test_a_body_over_the_limit_on_v1_is_413_in_openais_shape(cluster: Cluster) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        _client(cluster).completions.create(
            model="default", prompt="a" * (MAX_BODY_BYTES + 1), max_tokens=2
        )
    assert caught.value.status_code == 413
    assert caught.value.code == "INVALID_PARAMS" and caught.value.type == "invalid_request_error"
    assert str(MAX_BODY_BYTES) in caught.value.message


def test_null_where_the_document_allows_none_is_refused_and_8_0_is_an_integer(
    cluster: Cluster,
) -> None:
    with httpx.Client(base_url=cluster.url, timeout=30, headers=cluster.headers) as http:
        integral = http.post(
            "/v1/completions", json={"model": "default", "prompt": "x", "max_tokens": 3.0}
        )
        assert integral.status_code == 200, integral.text
        assert integral.json()["usage"]["completion_tokens"] == 3
        task = http.post("/v2/tasks", json={"model": "default", "prompt": "x", "max_tokens": 2.0})
        assert task.status_code == 202, task.text
        fraction = http.post(
            "/v2/tasks", json={"model": "default", "prompt": "x", "max_tokens": 2.5}
        )
        assert fraction.status_code == 400
        assert http.get("/v2/catalog/models", params={"limit": "1.0"}).status_code == 200
        assert http.get("/v2/catalog/models", params={"limit": "1.5"}).status_code == 400
        for path, body, field in [
            ("/v2/hosts/host-a/cordon", {"cordoned": False, "device": None}, "device"),
            ("/v2/pools/tiny-a/drain", {"deadline_ms": None}, "deadline_ms"),
            ("/v2/deployments/d1", {"model": "tiny", "aliases": None}, "aliases"),
            ("/v2/tasks", {"model": "default", "prompt": "x", "seed": None}, "seed"),
        ]:
            method = "PUT" if path.startswith("/v2/deployments") else "POST"
            refused = http.request(method, path, json=body)
            assert refused.status_code == 400, (path, refused.text)
            envelope = refused.json()
            assert envelope["code"] == "INVALID_PARAMS"
            assert [d["field"] for d in envelope["details"]] == [field], envelope
        long_id = "s" * 129
        for method in ("GET", "DELETE"):
            overlong = http.request(method, f"/v2/sessions/{long_id}")
            assert overlong.status_code == 400, overlong.text
        assert http.get("/v2/deployments/d1").status_code == 404  # nothing was declared
        assert not any(p["draining"] for p in http.get("/v2/pools").json()["pools"])


def test_embeddings_in_base64_are_the_float_vectors_as_little_endian_float32(
    cluster: Cluster,
) -> None:
    client = _client(cluster)
    floats = client.embeddings.create(model="default", input="hello", encoding_format="float")
    with httpx.Client(base_url=cluster.url, timeout=30, headers=cluster.headers) as http:
        raw = http.post(
            "/v1/embeddings",
            json={"model": "default", "input": "hello", "encoding_format": "base64"},
        )
        wrong_size = http.post(
            "/v1/embeddings", json={"model": "default", "input": "hello", "dimensions": 3}
        )
    assert raw.status_code == 200, raw.text
    packed = base64.b64decode(raw.json()["data"][0]["embedding"])
    vector = struct.unpack(f"<{len(packed) // 4}f", packed)
    expected = floats.data[0].embedding
    assert len(vector) == len(expected) == 64
    assert vector == pytest.approx(expected, rel=1e-6, abs=1e-7)
    # the official client asks for base64 by default and decodes it
    decoded = client.embeddings.create(model="default", input="hello")
    assert decoded.data[0].embedding == pytest.approx(expected, rel=1e-6, abs=1e-7)
    assert wrong_size.status_code == 400
    assert _openai_error(wrong_size)["param"] == "dimensions"


def test_a_quota_exceeded_on_v1_is_a_rate_limit_error_with_retry_after(cluster: Cluster) -> None:
    client = _client(cluster, key=LIMITED_KEY)
    first = client.completions.create(model="default", prompt="x", max_tokens=2)
    assert first.choices[0].finish_reason == "length"
    with pytest.raises(openai.RateLimitError) as caught:
        client.completions.create(model="default", prompt="x", max_tokens=2)
    assert caught.value.code == "QUOTA_EXCEEDED" and caught.value.type == "rate_limit_error"
    retry_after = int(caught.value.response.headers["retry-after"])
    assert 1 <= retry_after <= 60


def test_a_request_that_does_not_arrive_in_time_on_v1_is_408_in_openais_shape(
    cluster: Cluster,
) -> None:
    host, port = cluster.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10.0) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
            + f"Authorization: Bearer {CLIENT_KEY}\r\n".encode()
            + b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        received, deadline = b"", time.monotonic() + READ_TIMEOUT_S + 8
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), received[:300]
    assert re.search(rb"(?i)x-correlation-id: [0-9a-f]{32}", head), head
    error = json.loads(body)["error"]
    assert error["code"] == "INVALID_PARAMS" and error["type"] == "invalid_request_error"


def test_an_unready_model_on_v1_is_503_with_retry_after(cluster: Cluster) -> None:
    """Last: it drains the module's only pool."""
    with httpx.Client(base_url=cluster.url, timeout=30, headers=cluster.headers) as http:
        drained = http.post("/v2/pools/tiny-a/drain", json={"deadline_ms": 0})
        assert drained.status_code == 202, drained.text
        with pytest.raises(openai.InternalServerError) as caught:
            _client(cluster).completions.create(model="default", prompt="x", max_tokens=2)
    assert caught.value.status_code == 503
    assert caught.value.code == "POOL_UNREADY" and caught.value.type == "server_error"
    assert int(caught.value.response.headers["retry-after"]) >= 1
