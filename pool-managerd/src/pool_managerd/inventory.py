"""Host inventory (POOL-01): CPU cores, RAM, and GPUs through NVML when present.

Free GPU memory is measured, so memory held by processes outside llorch counts. NVML is
optional: without the library or a driver the host reports its CPU only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import psutil

__all__ = ["Device", "Inventory", "probe_inventory"]


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


@dataclass(frozen=True, slots=True)
class Inventory:
    cpu_cores: int
    ram_total_bytes: int
    ram_free_bytes: int
    devices: tuple[Device, ...]


def _gpus() -> list[Device]:
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
                )
            )
        return found
    finally:
        pynvml.nvmlShutdown()


def probe_inventory() -> Inventory:
    """Blocking (NVML and /proc reads): call from a thread on an event loop."""
    memory = psutil.virtual_memory()
    cpu = Device("cpu", "cpu", f"{os.cpu_count() or 1} cores", memory.total, memory.available)
    return Inventory(os.cpu_count() or 1, memory.total, memory.available, (cpu, *_gpus()))
