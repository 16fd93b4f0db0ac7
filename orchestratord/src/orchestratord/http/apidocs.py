"""The API document, served (API-01): `GET /openapi.yaml` (the canonical text),
`GET /openapi.json` (the same document as JSON) and `GET /docs`, a browsable page of it.

The page is Swagger UI 5 (it reads OpenAPI 3.1). Its script and stylesheet are the
ones bundled in the `swagger-ui-py` package (Apache-2.0; its licence is served beside
them), served by this process at `/docs/assets/{name}` from a fixed list: nothing is
fetched from a CDN or any other host, so the page works with no network, and its
Content-Security-Policy tells the browser to load nothing from elsewhere. All of these
are open to everyone, as the document itself is (`http.auth`).
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from pathlib import Path

import swagger_ui  # type: ignore[import-untyped]  # no stubs; only its static/ folder is used
import yaml
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from orchestratord.errors import ApiError
from specs import openapi_document

__all__ = ["ASSETS", "apidoc_routes"]

_SWAGGER_UI = Path(swagger_ui.__file__).resolve().parent / "static"
_OURS = resources.files("orchestratord.http") / "apidocs_static"
_JS = "text/javascript; charset=utf-8"
# name -> (where it is, content type). The only files `/docs/assets/` serves.
ASSETS: dict[str, tuple[str, str]] = {
    "swagger-ui-bundle.js": ("swagger-ui", _JS),
    "swagger-ui.css": ("swagger-ui", "text/css; charset=utf-8"),
    "favicon-32x32.png": ("swagger-ui", "image/png"),
    "LICENSE": ("swagger-ui", "text/plain; charset=utf-8"),
    "docs.js": ("ours", _JS),
}
_CACHE = {"Cache-Control": "public, max-age=3600"}
# The browser itself holds the page to this server: scripts, styles, the document and
# images from here only (Swagger UI's inline styles and data: icons aside).
_CSP = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
}


@functools.cache
def openapi_json() -> bytes:
    """The canonical YAML document as JSON (parsed once)."""
    return json.dumps(yaml.safe_load(openapi_document())).encode()


@functools.cache
def _asset(name: str) -> bytes:
    where, _ = ASSETS[name]
    if where == "ours":
        return (_OURS / name).read_bytes()
    return (_SWAGGER_UI / name).read_bytes()


def apidoc_routes() -> list[Route]:
    async def openapi_yaml(request: Request) -> Response:
        return Response(openapi_document(), media_type="application/yaml")

    async def openapi(request: Request) -> Response:
        return Response(openapi_json(), media_type="application/json")

    async def docs(request: Request) -> Response:
        page = (_OURS / "docs.html").read_bytes()
        return Response(page, headers=_CSP, media_type="text/html; charset=utf-8")

    async def asset(request: Request) -> Response:
        name = str(request.path_params["name"])
        if name not in ASSETS:
            raise ApiError("NOT_FOUND", f"no asset {name}; the page's assets are {sorted(ASSETS)}")
        return Response(_asset(name), headers=_CACHE, media_type=ASSETS[name][1])

    return [
        Route("/openapi.yaml", openapi_yaml, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/docs", docs, methods=["GET"]),
        Route("/docs/assets/{name}", asset, methods=["GET"]),
    ]
