"""Host inventory (POOL-01): CPU cores, RAM, and GPUs through NVML when present.

Free GPU memory is measured, so memory held by processes outside llorch counts. Each GPU
also lists the compute processes on it that are not ours (`foreign_processes`: pid and
GPU memory), as NVML reports them; ours are this pool manager and every process it
started (its engines and their children). NVML is optional: without the library or a
driver the host reports its CPU only.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import psutil

__all__ = [
    "Device",
    "GpuProcess",
    "Inventory",
    "foreign_processes",
    "our_pids",
    "probe_inventory",
]


@dataclass(frozen=True, slots=True)
class GpuProcess:
    """A compute process on a GPU, as NVML reports it (memory 0: NVML could not say)."""

    pid: int
    memory_bytes: int


@dataclass(frozen=True, slots=True)
class Device:
    id: str
    kind: str
    name: str
    memory_total_bytes: int
    memory_free_bytes: int
    compute_capability: str = ""
    simulated: bool = False
    cordoned: bool = False
    foreign_processes: tuple[GpuProcess, ...] = ()


@dataclass(frozen=True, slots=True)
class Inventory:
    cpu_cores: int
    ram_total_bytes: int
    ram_free_bytes: int
    devices: tuple[Device, ...]


def foreign_processes(
    processes: Iterable[GpuProcess], ours: frozenset[int]
) -> tuple[GpuProcess, ...]:
    """The processes not in `ours`, by pid (pure)."""
    return tuple(sorted((p for p in processes if p.pid not in ours), key=lambda p: p.pid))


def our_pids() -> frozenset[int]:
    """This process and every process under it (engines, their workers)."""
    me = psutil.Process()
    try:
        children = me.children(recursive=True)
    except psutil.Error:
        children = []
    return frozenset({me.pid, *(c.pid for c in children)})


def _nvml_processes(nvml: object, handle: object) -> list[GpuProcess]:
    """Compute and graphics processes on one GPU, each once, with its GPU memory."""
    found: dict[int, int] = {}
    for query in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
        try:
            running = getattr(nvml, query)(handle)
        except Exception:  # noqa: BLE001 - NVMLError or a binding without the call
            continue
        for process in running:
            used = getattr(process, "usedGpuMemory", None)
            found[int(process.pid)] = max(found.get(int(process.pid), 0), int(used or 0))
    return [GpuProcess(pid, used) for pid, used in found.items()]


def _gpus(ours: frozenset[int]) -> list[Device]:
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return []
    try:
        found = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
            name = pynvml.nvmlDeviceGetName(handle)
            found.append(
                Device(
                    f"gpu{index}",
                    "gpu",
                    str(name),
                    int(memory.total),
                    int(memory.free),
                    f"{major}.{minor}",
                    foreign_processes=foreign_processes(_nvml_processes(pynvml, handle), ours),
                )
            )
        return found
    finally:
        pynvml.nvmlShutdown()


def probe_inventory(ours: frozenset[int] | None = None) -> Inventory:
    """Blocking (NVML and /proc reads): call from a thread on an event loop. `ours`: the
    pids whose GPU use is llorch's own (default: this process and its descendants)."""
    memory = psutil.virtual_memory()
    cpu = Device("cpu", "cpu", f"{os.cpu_count() or 1} cores", memory.total, memory.available)
    mine = our_pids() if ours is None else ours
    return Inventory(os.cpu_count() or 1, memory.total, memory.available, (cpu, *_gpus(mine)))
