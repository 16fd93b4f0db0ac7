"""Progress for long steps (CLI-02, PRV-03): downloads, engine builds, model load and
warm-up, drawn by tqdm (a maintained library) with percent, rate and ETA.

`Progress(label, unit=...)` is a `(done, total)` callback; the bar is drawn only when
its stream is a terminal (`enabled=None`), so logs and pipes get no bar (the steps are
still narrated, one line each). A resumed download starts its bar at the bytes already
there (`initial`), so the rate and ETA count only what moves now. `Phase(label)` shows a
step without a total (starting, warming up): its state and the time spent.
`WeightsLoading` draws the load of a model's weights with percent and ETA from the
fraction loaded that the engines report (`load_progress` of `GET /v2/pools` and of a
deployment's pools; `load_fraction` picks the least of the loading pools').
`NarrationLines` prints narrated steps (`llorch: ACTION TARGET`) above any bar.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Mapping
from typing import Any, Never, TextIO

from tqdm import tqdm

__all__ = ["NarrationLines", "Phase", "Progress", "WeightsLoading", "human_bytes", "load_fraction"]

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def human_bytes(count: float) -> str:
    """1536 -> '1.5 KiB'; binary units, one decimal above bytes."""
    value = float(count)
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _on_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class Progress:
    """A `(done, total)` callback drawing a bar with rate and ETA; `close()` ends it.
    `unit="B"` shows binary sizes (KiB, MiB); any other unit counts steps."""

    def __init__(
        self,
        label: str,
        *,
        unit: str = "B",
        stream: TextIO | None = None,
        enabled: bool | None = None,
    ) -> None:
        self._label = label
        self._unit = unit
        self._stream = stream if stream is not None else sys.stderr
        self._enabled = _on_terminal(self._stream) if enabled is None else enabled
        self._bar: tqdm[Never] | None = None

    @property
    def enabled(self) -> bool:
        return self._enabled

    def __call__(self, done: int, total: int | None) -> None:
        if not self._enabled:
            return
        if self._bar is None:
            self._bar = tqdm(
                desc=self._label,
                total=total or None,
                initial=done,
                unit=self._unit,
                unit_scale=self._unit == "B",
                unit_divisor=1024,
                file=self._stream,
                dynamic_ncols=True,
                leave=True,
                mininterval=0.1,
            )
        bar = self._bar
        if total and bar.total != total:
            bar.total = total
        if done > bar.n:
            bar.update(done - bar.n)
        if total and done >= total:
            self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class Phase:
    """A step without a total: its current state and the time spent, redrawn in place."""

    def __init__(
        self, label: str, *, stream: TextIO | None = None, enabled: bool | None = None
    ) -> None:
        stream = stream if stream is not None else sys.stderr
        self._enabled = _on_terminal(stream) if enabled is None else enabled
        self._label = label
        self._bar: tqdm[Never] | None = None
        if self._enabled:
            self._bar = tqdm(
                desc=label,
                total=None,
                file=stream,
                bar_format="{desc} [{elapsed}]",
                dynamic_ncols=True,
                leave=True,
            )

    def state(self, text: str) -> None:
        if self._bar is not None:
            self._bar.set_description_str(f"{self._label}: {text}", refresh=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def load_fraction(pools: Iterable[Mapping[str, Any]]) -> float | None:
    """The least `load_progress` (0..1) of the pools that report one, None when none
    does (nothing loading, engines that cannot tell, or the warm-up after the load)."""
    reported = [float(p["load_progress"]) for p in pools if p.get("load_progress") is not None]
    return min(reported) if reported else None


class WeightsLoading:
    """A bar for the load of a model's weights, in percent with rate and ETA, fed the
    fraction loaded (`update`); drawn from the first fraction on, only on a terminal."""

    def __init__(
        self, label: str, *, stream: TextIO | None = None, enabled: bool | None = None
    ) -> None:
        self._bar = Progress(label, unit="%", stream=stream, enabled=enabled)
        self.seen = False  # a fraction was reported: what follows the load is the warm-up

    def update(self, fraction: float | None) -> None:
        if fraction is None:
            return
        self.seen = True
        self._bar(round(min(1.0, max(0.0, fraction)) * 100), 100)

    def close(self) -> None:
        self._bar.close()


class NarrationLines(logging.Handler):
    """Narrated steps as lines on stderr (`llorch: ACTION TARGET`), printed above any
    bar being drawn (tqdm clears and redraws it)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)

    def emit(self, record: logging.LogRecord) -> None:
        action = getattr(record, "action", None)
        target = getattr(record, "target", None)
        text = f"{action:<12} {target}" if action and target else record.getMessage()
        tqdm.write(f"llorch: {text}", file=sys.stderr)
        sys.stderr.flush()
