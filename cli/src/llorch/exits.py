"""The CLI's exit codes, one table for every command (CLI-05), printed by `--help`."""

from __future__ import annotations

__all__ = ["EXIT_CODES_HELP", "FAILED", "OK", "UNREACHABLE", "USAGE"]

OK = 0  # success
FAILED = 1  # the operation failed or was refused (its error code and reason are printed)
USAGE = 2  # usage error: a bad argument, file or model reference; a missing extra
UNREACHABLE = 3  # the orchestrator could not be reached

EXIT_CODES_HELP = """exit codes:
  0  success
  1  the operation failed or was refused (the error code and the reason are printed:
     a task error, FORBIDDEN for a client key, a daemon that died, a model not found)
  2  usage error (a bad argument, a bad config file or model reference, or an extra
     the command needs is not installed: the line names it)
  3  the orchestrator could not be reached (--url / $LLORCH_URL)
  130 interrupted (Ctrl-C)"""
