"""A plain-text progress bar for long steps (CLI-02, PRV-03): bytes, percent and rate.

`ProgressBar(stream)` is a `(done, total)` callback: it redraws one line with `\\r` at
most every `min_interval_s` seconds (and always at the end), padding with spaces over a
longer earlier line (no terminal escapes, so a log file reads fine), and counts the rate only
over the bytes moved since it was first called, so a resumed download shows its real
speed. `format_progress` is the pure formatting, tested on its own.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Protocol, TextIO

__all__ = ["NarrationLines", "ProgressBar", "format_progress", "human_bytes"]

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")
_BAR_CELLS = 24


def human_bytes(count: float) -> str:
    """1536 -> '1.5 KiB'; binary units, one decimal above bytes."""
    value = float(count)
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_progress(done: int, total: int | None, rate_bytes_per_s: float) -> str:
    """`[#####-----]  42%  1.2 MiB / 2.9 MiB  3.1 MiB/s`; without a total, no bar."""
    rate = f"{human_bytes(rate_bytes_per_s)}/s"
    if not total:
        return f"{human_bytes(done)}  {rate}"
    fraction = min(max(done / total, 0.0), 1.0)
    filled = round(fraction * _BAR_CELLS)
    bar = "#" * filled + "-" * (_BAR_CELLS - filled)
    return f"[{bar}] {fraction * 100:3.0f}%  {human_bytes(done)} / {human_bytes(total)}  {rate}"


class ProgressBar:
    """Draws progress on one terminal line; call `close()` when the step is over."""

    def __init__(
        self,
        stream: TextIO,
        *,
        label: str = "",
        min_interval_s: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream
        self._label = f"{label} " if label else ""
        self._min_interval_s = min_interval_s
        self._clock = clock
        self._start: tuple[float, int] | None = None  # (seconds, bytes) at the first call
        self._last_draw_s = float("-inf")
        self._drawn = False
        self._width = 0  # characters of the line drawn last

    def __call__(self, done: int, total: int | None) -> None:
        now = self._clock()
        if self._start is None:
            self._start = (now, done)
        finished = total is not None and done >= total
        if not finished and now - self._last_draw_s < self._min_interval_s:
            return
        elapsed = now - self._start[0]
        rate = (done - self._start[1]) / elapsed if elapsed > 0 else 0.0
        line = f"{self._label}{format_progress(done, total, rate)}"
        self._stream.write("\r" + line.ljust(self._width))
        self._width = len(line)
        self._stream.flush()
        self._last_draw_s = now
        self._drawn = True
        if finished:
            self.close()

    def close(self) -> None:
        """End the bar's line so that what follows starts on a fresh one."""
        if self._drawn:
            self._stream.write("\n")
            self._stream.flush()
            self._drawn = False
            self._width = 0


class _Line(Protocol):
    def close(self) -> None: ...


class NarrationLines(logging.Handler):
    """Narrated steps as lines on stderr (`llorch: ACTION TARGET`), each on its own line
    even while a progress line is drawn: `line.close()` ends that line first."""

    def __init__(self, line: _Line) -> None:
        super().__init__(logging.INFO)
        self._line = line

    def emit(self, record: logging.LogRecord) -> None:
        self._line.close()
        action = getattr(record, "action", None)
        target = getattr(record, "target", None)
        text = f"{action:<12} {target}" if action and target else record.getMessage()
        print(f"llorch: {text}", file=sys.stderr, flush=True)
