"""`python -m ci_harness.chaos`: a long chaos run that prints its schedule and table.

    uv run --frozen python -m ci_harness.chaos --faults 300 --seed 7

`--faults` is the total, shared equally by the six fault kinds (rounded up); the faults
start within `--span` seconds (default: 5 s per fault of one kind). Needs root (network
namespaces). Exit status: 0 when the checker finds nothing, 1 otherwise.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

from provisioners.testing import llama_server_for_tests

from ci_harness.chaos.nemesis import FAULT_KINDS
from ci_harness.chaos.run import ChaosSettings, run_chaos
from ci_harness.fleet import unavailable


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ci_harness.chaos", description=__doc__)
    parser.add_argument("--faults", type=int, default=300, help="faults in all (default 300)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--span", type=float, default=None, help="seconds the faults start in")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--dir", type=Path, default=None, help="where the history and logs go")
    args = parser.parse_args(argv)
    reason = unavailable()
    if reason:
        print(f"chaos needs network namespaces: {reason}", file=sys.stderr)
        return 2
    per_kind = math.ceil(args.faults / len(FAULT_KINDS))
    span = args.span if args.span is not None else 5.0 * per_kind
    root = args.dir or Path(tempfile.mkdtemp(prefix="llorch-chaos-"))
    settings = ChaosSettings(seed=args.seed, per_kind=per_kind, span_s=span, clients=args.clients)
    result = run_chaos(root, settings, list(llama_server_for_tests().command))
    print(result.table)
    print(f"orphan processes after the pool managers stopped: {result.orphans}")
    for error in result.harness_errors:
        print(f"harness: {error}")
    print(f"history: {result.history}")
    return 0 if result.verdict.ok else 1


if __name__ == "__main__":
    sys.exit(main())
