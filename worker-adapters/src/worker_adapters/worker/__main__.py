"""`python -m worker_adapters.worker`: the same entry point as `llorch worker`."""

from __future__ import annotations

import sys

from worker_adapters.worker.main import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m worker_adapters.worker"))
