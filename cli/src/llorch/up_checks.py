"""What `llorch up` checks before it starts anything, so a mistake fails within seconds
with the reason on screen (CLI-01, issue 14): the model file (missing, unreadable, not
a GGUF), the ports (busy), the engine (llama.cpp's Python binding missing or its library
not loading), and how many llama.cpp threads to use (the PHYSICAL cores this process
may run on: hyper-threads share a core's arithmetic units, so one thread per core).

Each check returns the problem in words ("" when there is none); `physical_cores` is
pure over the CPU set and a reader of sysfs topology files, so it is tested with fakes
of that reader only.
"""

from __future__ import annotations

import errno
import importlib
import os
import socket
from collections.abc import Callable, Iterable
from pathlib import Path

__all__ = [
    "engine_problem",
    "llama_threads",
    "model_problem",
    "physical_cores",
    "port_problem",
]

_TOPOLOGY = "/sys/devices/system/cpu/cpu{cpu}/topology/{name}"


def _read_sysfs(cpu: int, name: str) -> str | None:
    try:
        return Path(_TOPOLOGY.format(cpu=cpu, name=name)).read_text().strip()
    except OSError:
        return None


def physical_cores(
    cpus: Iterable[int], read: Callable[[int, str], str | None] = _read_sysfs
) -> int:
    """Distinct (package, core) pairs among `cpus`; a CPU without topology counts as
    its own core (so never fewer than 1 when any CPU is given)."""
    cores: set[tuple[str, str]] = set()
    for cpu in cpus:
        package, core = read(cpu, "physical_package_id"), read(cpu, "core_id")
        cores.add((package, core) if package is not None and core is not None else ("", f"{cpu}"))
    return max(1, len(cores))


def llama_threads(slots: int) -> int:
    """Threads per slot for the in-process llama.cpp pool: this process's physical
    cores shared among the slots, at least 1."""
    cores = physical_cores(sorted(os.sched_getaffinity(0)))
    return max(1, cores // max(1, slots))


def model_problem(path: Path) -> str:
    """Why `path` cannot be served as a GGUF model ("" when it can)."""
    if not path.exists():
        return f"model file {path} does not exist"
    if not path.is_file():
        return f"model {path} is not a file"
    from catalog_core import CatalogError, inspect_gguf  # here: missing files fail fast

    try:
        inspect_gguf(path)
    except (CatalogError, OSError, ValueError) as exc:
        return f"model file {path} is not a usable GGUF file: {exc}"
    return ""


def port_problem(host: str, port: int, what: str) -> str:
    """Why `host:port` cannot be listened on ("" when it can; port 0 always can)."""
    if port == 0:
        return ""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return f"{what} {host}:{port} is in use by another program (choose another port)"
            return f"{what} {host}:{port} cannot be listened on: {exc.strerror or exc}"
    return ""


def engine_problem(module: str = "llama_cpp") -> str:
    """Why the in-process llama.cpp engine cannot run here ("" when it can)."""
    try:
        importlib.import_module(module)
    except ImportError as exc:
        return (
            f"the llama.cpp engine is missing or its library does not load ({exc}); "
            "install it with: uv sync (or pip install 'llorch[llamacpp]')"
        )
    except OSError as exc:
        return f"the llama.cpp engine's library does not load: {exc}"
    return ""
