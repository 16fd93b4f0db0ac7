"""Reading what engines and build tools print (PRV-02, PRV-03). Pure text in, values out.

- `parse_llama_server_version`: `llama-server --version`, in both forms seen:
  `version: 0.5.0-dev (build 0, commit unknown)` (2026 trees) and `version: 6500
  (1a2b3c4)` (2025 releases, where the build number is the release tag `b6500`).
- `parse_llama_server_help`: the flag forms a supervisor must match (§A1.2, §A1.8):
  `-fa/--flash-attn` takes `on|off|auto` in recent builds and is a bare switch in old
  ones; `--metrics`, `--api-key` and `--api-key-file` may be absent.
- `parse_build_progress`: a build line's progress: ninja's `[12/80]` as (12, 80), make's
  `[ 45%]` as (45, 100).
- `parse_first_version`: the first version-looking token (`vllm --version`, pip-style).
- `ServerFlags`: the facts about a llama-server's flags, and their round trip through
  a catalog entry's `extra` map (`flags.*` keys).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "BuildInfo",
    "FlashAttnForm",
    "ServerFlags",
    "parse_build_progress",
    "parse_first_version",
    "parse_llama_server_help",
    "parse_llama_server_version",
]

FlashAttnForm = Literal["value", "switch", "absent"]

_NEW_VERSION = re.compile(r"version:\s*(\S+)\s*\(build\s+(\d+),\s*commit\s+([^)\s]+)\)")
_OLD_VERSION = re.compile(r"version:\s*(\d+)\s*\(([0-9a-zA-Z]+)\)")
_NINJA = re.compile(r"^\[(\d+)/(\d+)\]")
_MAKE = re.compile(r"^\[\s*(\d{1,3})%\]")
_FLASH_ATTN = re.compile(r"--flash-attn\b(?P<rest>[^\n]*)")
_ANY_VERSION = re.compile(r"\b(\d+\.\d+(?:\.\d+)?(?:[.+-][0-9A-Za-z.+-]*)?)\b")
_FLAG_PREFIX = "flags."


@dataclass(frozen=True, slots=True)
class BuildInfo:
    """`version` is what the catalog records; `build` the `b<number>-<commit>` string."""

    version: str
    build: str


@dataclass(frozen=True, slots=True)
class ServerFlags:
    """Which forms of the supervisor-relevant flags this llama-server accepts."""

    flash_attn: FlashAttnForm = "absent"
    metrics: bool = False
    api_key: bool = False
    api_key_file: bool = False

    def flash_attn_args(self, enabled: bool | None) -> tuple[str, ...]:
        """The argv for flash attention on/off/auto (None) in this binary's form."""
        if self.flash_attn == "value":
            return ("-fa", {True: "on", False: "off", None: "auto"}[enabled])
        if self.flash_attn == "switch" and enabled:
            return ("-fa",)
        return ()

    def to_extra(self) -> dict[str, str]:
        return {
            f"{_FLAG_PREFIX}flash_attn": self.flash_attn,
            f"{_FLAG_PREFIX}metrics": _bit(self.metrics),
            f"{_FLAG_PREFIX}api_key": _bit(self.api_key),
            f"{_FLAG_PREFIX}api_key_file": _bit(self.api_key_file),
        }

    @classmethod
    def from_extra(cls, extra: Mapping[str, str]) -> ServerFlags | None:
        """The flags recorded in a catalog entry; None when it has none."""
        form: FlashAttnForm
        match extra.get(f"{_FLAG_PREFIX}flash_attn"):
            case "value":
                form = "value"
            case "switch":
                form = "switch"
            case "absent":
                form = "absent"
            case _:
                return None
        return cls(
            flash_attn=form,
            metrics=extra.get(f"{_FLAG_PREFIX}metrics") == "1",
            api_key=extra.get(f"{_FLAG_PREFIX}api_key") == "1",
            api_key_file=extra.get(f"{_FLAG_PREFIX}api_key_file") == "1",
        )


def parse_llama_server_version(output: str) -> BuildInfo | None:
    """The version in `llama-server --version` output; None when there is none."""
    if (match := _NEW_VERSION.search(output)) is not None:
        return BuildInfo(match[1], f"b{match[2]}-{match[3]}")
    if (match := _OLD_VERSION.search(output)) is not None:
        return BuildInfo(f"b{match[1]}", f"b{match[1]}-{match[2]}")
    return None


def parse_llama_server_help(output: str) -> ServerFlags:
    """The flag forms `llama-server --help` documents (see module doc)."""
    flash = _FLASH_ATTN.search(output)
    form: FlashAttnForm = "absent"
    if flash is not None:
        form = "value" if "on|off" in flash["rest"] else "switch"
    return ServerFlags(
        flash_attn=form,
        metrics=re.search(r"--metrics\b", output) is not None,
        api_key=re.search(r"--api-key(?![-\w])", output) is not None,
        api_key_file=re.search(r"--api-key-file\b", output) is not None,
    )


def parse_build_progress(line: str) -> tuple[int, int] | None:
    """(done, total) from a ninja or make progress line; None for other lines."""
    if (match := _NINJA.match(line)) is not None:
        return int(match[1]), int(match[2])
    if (match := _MAKE.match(line)) is not None:
        return min(int(match[1]), 100), 100
    return None


def parse_first_version(output: str) -> str | None:
    match = _ANY_VERSION.search(output)
    return match[1] if match else None


def _bit(value: bool) -> str:
    return "1" if value else "0"
