"""A pool on a real GPU starts on that card alone with every layer on it; the inventory
lists the GPU processes that are not ours.

The real card is exercised by bench/gpu_suite.py on a GPU machine (bench/README.md, GPU);
these check what the pool manager decides before it starts an engine, and the pure parts
of the inventory.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from catalog_core import write_tiny_model
from pool_managerd.config import ManagerConfig, load_config
from pool_managerd.engines import ALL_LAYERS, device_env, gpu_layers, launch
from pool_managerd.inventory import GpuProcess, foreign_processes, our_pids, probe_inventory
from pool_managerd.network import HostNetwork
from worker_adapters.preload import PRELOAD_ENV

NETWORK = HostNetwork("127.0.0.1", "127.0.0.1", "127.0.0.1", True)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("gguf") / "tiny.gguf")


def _manager(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: Path, pool: str, devices: str = ""
) -> ManagerConfig:
    monkeypatch.setenv("LLORCH_JOIN_TOKEN", "t")
    path = tmp_path / "m.yaml"
    path.write_text(
        "orchestrator: 127.0.0.1:8090\n"
        f"state_dir: {tmp_path / 'state'}\n"
        f"pools:\n  - {{id: p, model: {model}, {pool}}}\n" + devices
    )
    return load_config(path)


def _flag(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def test_a_llama_server_pool_on_gpu1_sees_only_that_card_and_offloads_every_layer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: Path
) -> None:
    manager = _manager(
        tmp_path,
        monkeypatch,
        model,
        "engine: llamacpp, engine_command: [/b/llama-server], device: gpu1",
    )
    started = launch(manager.pools[0], manager, tmp_path / "p.port", "k", NETWORK)
    assert started.env["CUDA_VISIBLE_DEVICES"] == "1"
    assert started.env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"  # numbered as NVML numbers them
    assert started.env["LLAMA_API_KEY"] == "k"
    assert _flag(list(started.command), "-ngl") == str(ALL_LAYERS)


def test_an_in_process_pool_on_a_gpu_passes_every_layer_to_the_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: Path
) -> None:
    manager = _manager(tmp_path, monkeypatch, model, "engine: llamacpp-inproc, device: gpu0")
    started = launch(manager.pools[0], manager, tmp_path / "p.port", "k", NETWORK)
    assert started.env["CUDA_VISIBLE_DEVICES"] == "0"
    assert _flag(list(started.command), "--gpu-layers") == str(ALL_LAYERS)


def test_a_pool_that_sets_gpu_layers_keeps_its_count_on_a_gpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: Path
) -> None:
    manager = _manager(
        tmp_path, monkeypatch, model, "engine: llamacpp-inproc, device: gpu0, gpu_layers: 3"
    )
    assert gpu_layers(manager.pools[0], manager) == 3
    started = launch(manager.pools[0], manager, tmp_path / "p.port", "k", NETWORK)
    assert _flag(list(started.command), "--gpu-layers") == "3"


def test_cpu_and_simulated_device_pools_start_as_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: Path
) -> None:
    simulated = "devices:\n  - {id: gpu0, kind: gpu, memory_total_bytes: 80000000000}\n"
    for device, devices in (("cpu", ""), ("gpu0", simulated)):
        manager = _manager(
            tmp_path, monkeypatch, model, f"engine: llamacpp-inproc, device: {device}", devices
        )
        pool = manager.pools[0]
        assert device_env(pool, manager) == {}
        assert gpu_layers(pool, manager) == 0
        started = launch(pool, manager, tmp_path / "p.port", "k", NETWORK)
        assert "CUDA_VISIBLE_DEVICES" not in started.env
        assert "--gpu-layers" not in started.command


def test_foreign_processes_leave_out_ours_and_come_sorted_by_pid() -> None:
    seen = [GpuProcess(40, 1 << 30), GpuProcess(7, 0), GpuProcess(12, 5 << 20)]
    assert foreign_processes(seen, frozenset({12})) == (GpuProcess(7, 0), GpuProcess(40, 1 << 30))
    assert foreign_processes(seen, frozenset({7, 12, 40})) == ()


def test_our_pids_hold_this_process_and_its_children() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        ours = our_pids()
        assert {child.pid, os.getpid()} <= ours
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(10)


def test_the_inventory_always_reports_the_cpu_and_gpus_only_with_their_processes() -> None:
    inventory = probe_inventory()
    assert inventory.devices[0].id == "cpu"
    assert inventory.devices[0].foreign_processes == ()
    for gpu in inventory.devices[1:]:  # only on a machine with NVML and a card
        assert gpu.kind == "gpu" and gpu.compute_capability
        assert all(p.pid not in our_pids() for p in gpu.foreign_processes)


def test_an_in_process_worker_is_told_to_load_llama_cpp_before_other_extensions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: Path
) -> None:
    manager = _manager(tmp_path, monkeypatch, model, "engine: llamacpp-inproc")
    started = launch(manager.pools[0], manager, tmp_path / "p.port", "k", NETWORK)
    assert started.env[PRELOAD_ENV] == "1"
    # and the worker package then imports llama_cpp before grpc and numpy
    code = (
        "import sys, worker_adapters; m = list(sys.modules); "
        "print(m.index('llama_cpp.llama_cpp') < min(m.index('grpc'), m.index('numpy')))"
    )
    env = {**os.environ, **started.env}
    shown = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert shown.stdout.strip() == "True"
    env.pop(PRELOAD_ENV)
    plain = subprocess.run(
        [sys.executable, "-c", "import sys, worker_adapters; print('llama_cpp' in sys.modules)"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert plain.stdout.strip() == "False"  # other processes never load it through us
