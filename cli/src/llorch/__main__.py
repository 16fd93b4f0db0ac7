"""`llorch`: the operator CLI.

    llorch up         run the platform on this machine (orchestrator, pool manager, model)
    llorch run MODEL  chat with a model (fetched and loaded if needed), like `ollama run`
    llorch ps         list running and queued jobs; `llorch cancel ID` ends one
    llorch logs POOL  a pool's engine log (`-f` follows); `llorch stop POOL` stops a pool
    llorch join       join this host to an orchestrator elsewhere (a pool manager, its pools)
    llorch certs      issue host certificates from the fleet CA of `llorch up --listen`
    llorch submit     stream a prompt's tokens to the terminal
    llorch completion bash|zsh|fish   a shell completion script
    llorch worker     serve one model in-process over gRPC (started by pool-managerd)

`pip install llorch` installs the client commands; `up`, `join` and `worker` need the
extras `server`, `llamacpp` (and `default-model` for `up` without --model), or `all`:
without them they print which to install and exit 2 (`llorch.extras`).

Commands that talk to the orchestrator take `--url` (default $LLORCH_URL, else
http://127.0.0.1:8080) and `--api-key` (default $LLORCH_API_KEY; prefer the variable).
Models are named by catalog id or alias, path, `hf:ORG/REPO[:QUANT]`,
`hf:ORG/REPO/FILE.gguf` or `https://...` (`llorch.model_ref`).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from llorch import exits, extras
from llorch.api_key import resolve_connection

__all__ = ["build_parser", "main"]

# Each command's module, in the order `--help` lists them. Only the module of the
# command being run is imported (a fast start: `up --model missing.gguf` fails at once);
# `--help`, completion and a mistyped command build them all.
_MODULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("up", ("up",)),
    ("run", ("run",)),
    ("jobs", ("ps", "cancel")),
    ("pool_ops", ("logs", "stop")),
    ("join", ("join",)),
    ("certs", ("certs",)),
    ("submit", ("submit",)),
    ("provision", ("provision",)),
    ("catalog", ("catalog",)),
    ("control", ("deploy", "pools", "hosts")),
    ("chat", ("chat", "caps")),
)


def _worker(commands: Any) -> None:
    parser = commands.add_parser("worker", help="serve one model over gRPC", add_help=False)
    parser.set_defaults(handler=None)


def _version() -> str:
    try:
        return version("llorch")
    except PackageNotFoundError:  # pragma: no cover - run from a source tree
        return "unknown"


def _register(commands: Any, module: str) -> None:
    loaded = importlib.import_module(f"llorch.{module}")
    register = getattr(loaded, "add_parsers", None) or loaded.add_parser
    register(commands)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; with `command`, only that command's (when it is one)."""
    parser = argparse.ArgumentParser(
        prog="llorch",
        description=__doc__.splitlines()[0],
        epilog=exits.EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"llorch {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    only = [module for module, names in _MODULES if command in names]
    for module in only or [module for module, _ in _MODULES]:
        _register(commands, module)
    if not only:
        from llorch import completion

        completion.add_parser(commands, parser)
        _worker(commands)
    for sub in commands.choices.values():
        if sub.epilog is None and sub.prog != "llorch worker":
            sub.epilog = exits.EXIT_CODES_HELP
            sub.formatter_class = argparse.RawDescriptionHelpFormatter
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["worker"]:
        if missing := extras.missing_extra_line("worker", None):
            print(f"llorch: {missing}", file=sys.stderr)
            return exits.USAGE
        from worker_adapters.worker.main import main as worker_main

        return worker_main(argv[1:])
    args = build_parser(argv[0] if argv else None).parse_args(argv)
    if missing := extras.missing_extra_line(args.command, args):
        print(f"llorch: {missing}", file=sys.stderr)
        return exits.USAGE
    resolve_connection(args)
    try:
        result: int = args.handler(args)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    return result


if __name__ == "__main__":
    sys.exit(main())
