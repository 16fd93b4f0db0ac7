"""Where the CLI's orchestrator commands connect, and the API key they send (SEC-01,
SEC-05): `connection_options` adds `--url` (default `$LLORCH_URL`, else
http://127.0.0.1:8080) and `--api-key` (default `$LLORCH_API_KEY`) to a command;
`auth_headers(args)` is `Authorization: Bearer <key>` for every call.

Prefer the environment variable: a key given with `--api-key` is visible in the process
list and the shell history. Control commands that change the fleet (`deploy apply|rm`,
`pools drain|reload`, `stop`, `logs`, `hosts cordon|uncordon`) need a key with role
`admin`; jobs and reads a `client` key. Without a key nothing is sent (an orchestrator
with no keys, on loopback, needs none).
"""

from __future__ import annotations

import argparse
import os

__all__ = [
    "DEFAULT_URL",
    "ENV",
    "URL_ENV",
    "auth_headers",
    "connection_options",
    "default_url",
    "resolve_connection",
]

ENV = "LLORCH_API_KEY"
URL_ENV = "LLORCH_URL"
DEFAULT_URL = "http://127.0.0.1:8080"


def default_url() -> str:
    return os.environ.get(URL_ENV, "").strip() or DEFAULT_URL


def connection_options(parser: argparse.ArgumentParser) -> None:
    """`--url` and `--api-key`, read from the environment when the command runs."""
    parser.add_argument(
        "--url", default=None, help=f"the orchestrator (default: ${URL_ENV}, else {DEFAULT_URL})"
    )
    parser.add_argument(
        "--api-key",
        default=None,
        help=f"API key (default: ${ENV}; prefer the variable: a flag shows in the process list)",
    )
    parser.set_defaults(_connection=True)


def resolve_connection(args: argparse.Namespace) -> None:
    """Fill `args.url` from the environment when `--url` was not given."""
    if getattr(args, "_connection", False) and not args.url:
        args.url = default_url()
    if getattr(args, "url", None):
        args.url = str(args.url).rstrip("/")


def auth_headers(args: argparse.Namespace | None = None) -> dict[str, str]:
    given = getattr(args, "api_key", None) if args is not None else None
    key = (given or os.environ.get(ENV, "")).strip()
    return {"Authorization": f"Bearer {key}"} if key else {}
