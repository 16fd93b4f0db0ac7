"""`orchestratord [--config FILE] [--http-port N] [--control-port N] [--ready-file PATH]`.

Exit codes (REL-06):

    0   clean shutdown after SIGTERM/SIGINT: new jobs were refused (503 SHUTTING_DOWN),
        running ones had `shutdown_grace_s` to end (the rest ended ORCHESTRATOR_RESTART,
        retriable), queued ones stay in the journal for the next start
    1   an unexpected error (a traceback is logged)
    2   invalid configuration (the reason on stderr)

A second signal during the grace stops at once. After SIGKILL the next start recovers
from the journal: queued jobs run, running ones end ORCHESTRATOR_RESTART.
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
