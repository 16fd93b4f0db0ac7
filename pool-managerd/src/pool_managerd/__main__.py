"""`pool-managerd --config FILE`: run the host daemon.

| code | when                                                                          |
|------|-------------------------------------------------------------------------------|
| 0    | clean shutdown on SIGTERM/SIGINT: pools drained within `shutdown_grace_s`,    |
|      | every engine stopped (also when signalled before the network was settled)     |
| 1    | an unexpected error (a bug): the traceback is in the log                      |
| 2    | invalid configuration or command line: the file, a setting, TLS files, the    |
|      | join token, an unusable `state_dir`, or a plaintext control link off this     |
|      | machine without `insecure: true`                                              |
| 3    | another pool-managerd holds this `state_dir` (nothing was started or stopped) |

The reason goes to stderr: for 2, one line naming the file, the key and what was
expected (no log record besides it); for 1 and 3, also a log record.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from specs.narration import configure_logging

from pool_managerd.config import ConfigError, load_config
from pool_managerd.manager import serve
from pool_managerd.records import StateLocked

EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_STATE_IN_USE = 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pool-managerd", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    configure_logging("pool-managerd", args.log_level)
    try:
        config = load_config(args.config)
        tls = config.tls.load() if config.tls is not None else None
    except (ConfigError, OSError) as exc:
        return _invalid(exc)
    try:
        return asyncio.run(serve(config, tls))
    except ConfigError as exc:
        return _invalid(exc)
    except StateLocked as exc:
        logging.getLogger("pool_managerd").error("%s", exc)
        print(f"pool-managerd: {exc}", file=sys.stderr)
        return EXIT_STATE_IN_USE
    except Exception as exc:  # a bug: say so, with the traceback, under a documented code
        logging.getLogger("pool_managerd").exception("pool-managerd failed: %s", exc)
        print(f"pool-managerd: failed: {exc!r} (traceback in the log)", file=sys.stderr)
        return EXIT_FAILED


def _invalid(exc: Exception) -> int:
    # One line, not also a JSON log record: stderr is the log (`llorch` reads it there).
    print(f"pool-managerd: invalid configuration: {exc}", file=sys.stderr)
    return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
