"""A raw byte relay in front of one upstream: the Python floor of the gateway benchmarks.

    python bench/passthrough.py --upstream http://127.0.0.1:PORT [--port N] [--port-file F]

An aiohttp server (uvloop when installed) that forwards every request (method, path,
query, body, `Content-Type`, `Accept`, `Authorization`) to the upstream over one shared
keep-alive client session and copies the upstream's status, content type and body bytes
back unchanged as they arrive: no SSE parsing, no JSON, no accounting. Whatever a real
gateway costs above this is its own work.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import aiohttp
from aiohttp import web

__all__ = ["build_app"]

_FORWARDED = ("Content-Type", "Accept", "Authorization")
_SESSION = web.AppKey("session", aiohttp.ClientSession)


def build_app(upstream: str) -> web.Application:
    base = upstream.rstrip("/")

    async def relay(request: web.Request) -> web.StreamResponse:
        session = request.app[_SESSION]
        body = await request.read()
        headers = {name: request.headers[name] for name in _FORWARDED if name in request.headers}
        async with session.request(
            request.method, base + request.path_qs, data=body, headers=headers
        ) as upstream_response:
            response = web.StreamResponse(
                status=upstream_response.status,
                headers={
                    "Content-Type": upstream_response.headers.get(
                        "Content-Type", "application/octet-stream"
                    )
                },
            )
            await response.prepare(request)
            async for chunk in upstream_response.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    async def session_context(app: web.Application) -> object:
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30.0)
        app[_SESSION] = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=None), auto_decompress=False
        )
        yield
        await app[_SESSION].close()

    app = web.Application(client_max_size=8 << 20)
    app.cleanup_ctx.append(session_context)  # type: ignore[arg-type]
    app.router.add_route("*", "/{tail:.*}", relay)
    return app


async def serve(host: str, port: int, upstream: str, port_file: Path | None) -> None:
    runner = web.AppRunner(build_app(upstream), access_log=None, handle_signals=True)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=4096)
    await site.start()
    bound = int(runner.addresses[0][1])
    if port_file is not None:
        scratch = port_file.with_suffix(".tmp")
        scratch.write_text(str(bound))
        scratch.replace(port_file)
    print(f"pass-through on {host}:{bound} -> {upstream}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True, help="base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", type=Path, help="write the bound port here")
    args = parser.parse_args(argv)
    coroutine = serve(args.host, args.port, args.upstream, args.port_file)
    try:
        import uvloop
    except ImportError:
        asyncio.run(coroutine)
    else:
        uvloop.run(coroutine)
    return 0


if __name__ == "__main__":
    sys.exit(main())
