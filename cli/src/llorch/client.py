"""One call to the orchestrator's API for the CLI: `call` returns the JSON answer, or
raises `Refused` with the error envelope's code and message (`httpx.TransportError`
when the orchestrator cannot be reached: the caller exits 3)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import httpx

from llorch import exits
from llorch.api_key import auth_headers

__all__ = ["Refused", "call"]


class Refused(Exception):
    """The orchestrator answered with an error (4xx/5xx): `code: message`."""

    def __init__(self, response: httpx.Response) -> None:
        try:
            body = response.json()
            self.code = str(body.get("code"))
            message = f"{body.get('code')}: {body.get('message')}"
        except ValueError:
            self.code = ""
            message = f"HTTP {response.status_code}"
        self.status = response.status_code
        super().__init__(message)


def call(
    args: argparse.Namespace,
    method: str,
    path: str,
    body: Any = None,
    timeout_s: float = 30.0,
    params: dict[str, Any] | None = None,
) -> Any:
    with httpx.Client(base_url=args.url, timeout=timeout_s, headers=auth_headers(args)) as client:
        response = client.request(method, path, json=body, params=params)
    if response.status_code >= 400:
        raise Refused(response)
    return response.json() if response.content else None


def guarded(handler: Any) -> Any:
    """`handler(args)` as a command: a refusal is exit 1 (`exits.FAILED`) with its line,
    an unreachable orchestrator exit 3, Ctrl-C exit 130."""

    def run(args: argparse.Namespace) -> int:
        try:
            result: int = handler(args)
            return result
        except Refused as exc:
            print(f"llorch: {exc}", file=sys.stderr)
            return exits.FAILED
        except httpx.TransportError as exc:
            print(f"llorch: cannot reach {args.url}: {exc}", file=sys.stderr)
            return exits.UNREACHABLE
        except KeyboardInterrupt:
            return 130

    return run
