"""`llorch chat` and `llorch caps` (CLI-04).

`chat` is an interactive chat with history: every line you type is sent with the
conversation so far as a `chat` task in one session (so turns land on the pool whose
cache is warm), and the answer streams live. `/reset` starts over, `/exit` (or end of
input) quits. `caps` prints what the fleet can do (API-09). The API key, when the
orchestrator needs one, is `$LLORCH_API_KEY`. Exit codes: 0 success; 1 a turn failed or
the orchestrator refused; 3 unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from typing import Any

import httpx

from llorch.api_key import auth_headers, connection_options
from llorch.catalog import table
from llorch.sse import parse_sse

__all__ = ["add_parsers", "converse", "turn"]

EXIT_OK, EXIT_FAILED, EXIT_UNREACHABLE = 0, 1, 3


async def turn(client: httpx.AsyncClient, body: dict[str, Any]) -> tuple[str, str | None]:
    """Stream one answer to stdout; returns (text, error or None)."""
    headers = {"Accept": "text/event-stream"}
    parts: list[str] = []
    async with client.stream("POST", "/v2/tasks", json=body, headers=headers) as response:
        if response.status_code != 200:
            error = json.loads(await response.aread())
            return "", f"{error.get('code')}: {error.get('message')}"
        async for event in parse_sse(response.aiter_lines()):
            data = json.loads(event.data)
            if event.event == "token":
                parts.append(data["t"])
                sys.stdout.write(data["t"])
                sys.stdout.flush()
            elif event.event == "error":
                return "".join(parts), f"{data['code']}: {data['message']}"
    print()
    return "".join(parts), None


async def converse(args: argparse.Namespace) -> int:
    history: list[dict[str, str]] = []
    if args.system:
        history.append({"role": "system", "content": args.system})
    session = args.session or f"chat-{uuid.uuid4().hex[:12]}"
    interactive = sys.stdin.isatty()
    async with httpx.AsyncClient(
        base_url=args.url, timeout=httpx.Timeout(10, read=None), headers=auth_headers(args)
    ) as client:
        while True:
            if interactive:
                print("you> ", end="", flush=True)
            line = await asyncio.to_thread(sys.stdin.readline)
            if not line or line.strip() == "/exit":
                return EXIT_OK
            text = line.strip()
            if not text:
                continue
            if text == "/reset":
                history = history[:1] if args.system else []
                session = f"chat-{uuid.uuid4().hex[:12]}"
                continue
            history.append({"role": "user", "content": text})
            body = {
                "model": args.model,
                "workload": "chat",
                "messages": history,
                "max_tokens": args.max_tokens,
                "session_id": session,
                "session": {"max_turns": 10_000},
            }
            try:
                answer, error = await turn(client, body)
            except httpx.TransportError as exc:
                print(f"llorch: cannot reach {args.url}: {exc}", file=sys.stderr)
                return EXIT_UNREACHABLE
            if error is not None:
                print(f"\nllorch: {error}", file=sys.stderr)
                return EXIT_FAILED
            history.append({"role": "assistant", "content": answer})


def _caps(args: argparse.Namespace) -> int:
    try:
        response = httpx.get(
            f"{args.url}/v2/meta/capabilities", timeout=30, headers=auth_headers(args)
        )
    except httpx.TransportError as exc:
        print(f"llorch: cannot reach {args.url}: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    if response.status_code != 200:
        print(f"llorch: {response.json().get('message')}", file=sys.stderr)
        return EXIT_FAILED
    caps = response.json()
    if args.json:
        print(json.dumps(caps, indent=2))
        return EXIT_OK
    rows = [
        [
            p["pool_id"],
            p["engine"],
            p["engine_version"],
            ",".join([p["models"][0]["id"], *p["models"][0]["aliases"]]),
            str(p["ctx_max"]),
            f"{p['slots_free']}/{p['slots_total']}",
            ",".join(p["workloads"]),
            ",".join(p["features"]) or "-",
        ]
        for p in caps["pools"]
    ]
    print(f"api_version {caps['api_version']}")
    print(
        table(["POOL", "ENGINE", "VERSION", "MODELS", "CTX", "FREE", "WORKLOADS", "FEATURES"], rows)
        if rows
        else "no ready pools"
    )
    return EXIT_OK


def add_parsers(commands: Any) -> None:
    chat = commands.add_parser("chat", help="interactive chat with history")
    connection_options(chat)
    chat.add_argument("--model", default="default")
    chat.add_argument("--system", help="a system prompt")
    chat.add_argument("--max-tokens", type=int, default=256)
    chat.add_argument("--session", help="session id (default: a new one)")
    chat.set_defaults(handler=lambda args: asyncio.run(converse(args)))
    caps = commands.add_parser("caps", help="what the fleet can do now")
    connection_options(caps)
    caps.add_argument("--json", action="store_true")
    caps.set_defaults(handler=_caps)
