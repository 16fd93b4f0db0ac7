"""Turning engine output into clean text deltas: UTF-8 reassembly and stop strings.

`TextAssembler` is fed the bytes of each generated token. It returns only whole UTF-8
characters (the bytes of a character split across tokens are held until it completes;
bytes that can never form a character become U+FFFD), and it holds back any tail that
could be the start of a stop string, so a stop string never reaches the client (ADP-03,
WRK-02). Pure and synchronous; one instance per generation.
"""

from __future__ import annotations

import codecs

__all__ = ["TextAssembler"]


class TextAssembler:
    """Incremental UTF-8 decoder with stop-string detection."""

    __slots__ = ("_decoder", "_held", "_stops", "stopped")

    def __init__(self, stops: tuple[str, ...] = ()) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stops = tuple(s for s in stops if s)
        self._held = ""
        self.stopped = False

    def feed(self, piece: bytes) -> str:
        """Add one token's bytes; return the text that is now safe to emit."""
        return self._release(self._decoder.decode(piece))

    def finish(self) -> str:
        """Flush at the end of generation: incomplete bytes become U+FFFD."""
        if self.stopped:
            return ""
        text = self._held + self._decoder.decode(b"", final=True)
        self._held = ""
        return text

    def _release(self, text: str) -> str:
        if self.stopped:
            return ""
        if not self._stops:
            return text
        pending = self._held + text
        cut = min((i for i in (pending.find(s) for s in self._stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self._held = ""
            return pending[:cut]
        keep = self._longest_stop_prefix_suffix(pending)
        self._held = pending[len(pending) - keep :] if keep else ""
        return pending[: len(pending) - keep]

    def _longest_stop_prefix_suffix(self, text: str) -> int:
        """Length of the longest suffix of `text` that is a proper prefix of a stop string."""
        best = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(text)), best, -1):
                if text.endswith(stop[:size]):
                    best = size
                    break
        return best
