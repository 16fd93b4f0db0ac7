"""`orchestratord [--config FILE] [--http-port N] [--control-port N] [--ready-file PATH]`.

Exit codes: 0 after a clean shutdown (SIGTERM/SIGINT), 2 for an invalid configuration.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import uvloop
from specs.narration import configure_logging
from specs.tracing import TracingConfigError, setup_tracing

from orchestratord.app import serve
from orchestratord.config import ConfigError, load_config

EXIT_CONFIG = 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="orchestratord", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path)
    parser.add_argument("--http-host")
    parser.add_argument("--http-port", type=int)
    parser.add_argument("--control-host")
    parser.add_argument("--control-port", type=int)
    parser.add_argument(
        "--ready-file", type=Path, help="write the bound ports here as JSON once serving"
    )
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    # Info lines are written ~2 ms after they are logged, in batches: a request's
    # narration stays off its way to the first token.
    configure_logging("orchestratord", args.log_level, defer_s=0.002)
    try:
        config = load_config(
            args.config,
            http_host=args.http_host,
            http_port=args.http_port,
            control_host=args.control_host,
            control_port=args.control_port,
        )
        setup_tracing("orchestratord")  # OBS-03: off unless the environment turns it on
    except (ConfigError, OSError, TracingConfigError) as exc:
        print(f"orchestratord: invalid configuration: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    return uvloop.run(serve(config, ready_file=args.ready_file))


if __name__ == "__main__":
    sys.exit(main())
