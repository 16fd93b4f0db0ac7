"""`llorch`: the operator CLI.

    llorch up         run the platform on this machine (orchestrator, pool manager, model)
    llorch join       join this host to an orchestrator elsewhere (a pool manager, its pools)
    llorch certs      issue host certificates from the fleet CA of `llorch up --listen`
    llorch submit     stream a prompt's tokens to the terminal
    llorch worker     serve one model in-process over gRPC (started by pool-managerd)

Exit codes: 0 success; 1 the operation failed (task error, daemon died); 2 usage error;
3 the orchestrator could not be reached.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from llorch import catalog, certs, chat, control, join, provision, submit, up

__all__ = ["main"]


def _worker(commands: Any) -> None:
    parser = commands.add_parser("worker", help="serve one model over gRPC", add_help=False)
    parser.set_defaults(handler=None)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["worker"]:
        from worker_adapters.worker.main import main as worker_main

        return worker_main(argv[1:])
    parser = argparse.ArgumentParser(prog="llorch", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    up.add_parser(commands)
    join.add_parser(commands)
    certs.add_parser(commands)
    submit.add_parser(commands)
    provision.add_parser(commands)
    catalog.add_parser(commands)
    control.add_parsers(commands)
    chat.add_parsers(commands)
    _worker(commands)
    args = parser.parse_args(argv)
    result: int = args.handler(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
