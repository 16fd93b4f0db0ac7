"""Cordon state of this host and its devices (POOL-08), kept in `state_dir/cordon.json`
so it survives restarts. A cordoned host or device gets no new pools; pools already
there keep serving until they are drained or stopped."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["CordonState"]


@dataclass(slots=True)
class CordonState:
    path: Path
    host: bool = False
    devices: set[str] = field(default_factory=set)

    @classmethod
    def load(cls, state_dir: Path) -> CordonState:
        path = state_dir / "cordon.json"
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError):
            return cls(path)
        return cls(path, bool(raw.get("host")), set(raw.get("devices") or ()))

    def set(self, cordoned: bool, device: str = "") -> None:
        if device:
            (self.devices.add if cordoned else self.devices.discard)(device)
        else:
            self.host = cordoned
        self.path.parent.mkdir(parents=True, exist_ok=True)
        scratch = self.path.with_suffix(".tmp")
        scratch.write_text(json.dumps({"host": self.host, "devices": sorted(self.devices)}))
        scratch.replace(self.path)
