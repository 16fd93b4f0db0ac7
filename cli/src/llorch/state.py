"""The CLI's state directory: `$LLORCH_STATE_DIR`, else `~/.local/share/llorch` (kept in
a module of its own, without heavy imports, so every command starts fast)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_state_dir"]


def default_state_dir() -> Path:
    return Path(os.environ.get("LLORCH_STATE_DIR") or Path.home() / ".local/share/llorch")
