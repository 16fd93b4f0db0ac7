"""`llorch submit`: admit a task and stream its tokens live to the terminal (CLI-04).

Tokens go to stdout as they arrive; the summary (tokens, time to first token, decode
time, tokens per second) goes to stderr. Exit codes: 0 completed, 1 the task failed or
was refused (the error code and message are printed), 3 the orchestrator could not be
reached. The orchestrator is `--url` (`$LLORCH_URL`); the API key, when it needs one,
`--api-key` or `$LLORCH_API_KEY`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import httpx

from llorch.api_key import auth_headers, connection_options
from llorch.sse import parse_sse

__all__ = ["add_parser", "run"]

EXIT_OK, EXIT_TASK_FAILED, EXIT_UNREACHABLE = 0, 1, 3


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("submit", help="stream a prompt's tokens to the terminal")
    parser.add_argument("prompt")
    connection_options(parser)
    parser.add_argument("--model", default="default")
    parser.add_argument("--chat", action="store_true", help="send the prompt as a user message")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--priority", choices=("interactive", "batch"), default="interactive")
    parser.add_argument("--json", action="store_true", help="print each event as a JSON line")
    parser.set_defaults(handler=lambda args: asyncio.run(run(args)))


def _body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": args.model,
        "max_tokens": args.max_tokens,
        "priority": args.priority,
    }
    if args.chat:
        body.update(workload="chat", messages=[{"role": "user", "content": args.prompt}])
    else:
        body["prompt"] = args.prompt
    for name in ("temperature", "seed"):
        if getattr(args, name) is not None:
            body[name] = getattr(args, name)
    return body


async def run(args: argparse.Namespace) -> int:
    headers = {"Accept": "text/event-stream", "Content-Type": "application/json"}
    headers.update(auth_headers(args))
    started = time.perf_counter()
    try:
        async with (
            httpx.AsyncClient(base_url=args.url, timeout=httpx.Timeout(10, read=None)) as client,
            client.stream("POST", "/v2/tasks", json=_body(args), headers=headers) as response,
        ):
            if response.status_code != 200:
                error = json.loads(await response.aread())
                print(f"llorch: {error.get('code')}: {error.get('message')}", file=sys.stderr)
                return EXIT_TASK_FAILED
            return await _print_stream(response, args.json, started)
    except httpx.TransportError as exc:
        print(f"llorch: cannot reach {args.url}: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE


async def _print_stream(response: httpx.Response, as_json: bool, started: float) -> int:
    async for event in parse_sse(response.aiter_lines()):
        payload = json.loads(event.data)
        if as_json:
            print(json.dumps({"id": event.id, "event": event.event, "data": payload}), flush=True)
        elif event.event == "token":
            sys.stdout.write(payload["t"])
            sys.stdout.flush()
        if event.event == "end":
            elapsed = time.perf_counter() - started
            decode_s = payload["decode_time_ms"] / 1000.0
            rate = payload["tokens_out"] / decode_s if decode_s > 0 else 0.0
            if not as_json:
                print(file=sys.stdout)
                print(
                    f"[{payload['tokens_out']} tokens, finish {payload['finish_reason']}, "
                    f"ttft {payload['ttft_ms']:.0f} ms, decode {payload['decode_time_ms']:.0f} ms, "
                    f"{rate:.1f} tokens/s, total {elapsed:.2f} s]",
                    file=sys.stderr,
                )
            return EXIT_OK
        if event.event == "error":
            if not as_json:
                print(f"\nllorch: {payload['code']}: {payload['message']}", file=sys.stderr)
            return EXIT_TASK_FAILED
    print("\nllorch: the stream ended without an end event", file=sys.stderr)
    return EXIT_TASK_FAILED
