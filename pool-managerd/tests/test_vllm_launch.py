"""The `vllm` engine kind: its launch line, environment, KV cache size and model checks.

The real server runs in ci/harness/tests/test_vllm_engine_pool.py; these check what the pool
manager builds before it starts one.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from catalog_core import TinyHfModelSpec, sha256_folder, write_tiny_hf_model, write_tiny_model
from pool_managerd.config import ConfigError, load_config
from pool_managerd.engines import ENGINE_ADAPTERS, launch, vllm_kv_cache_bytes
from pool_managerd.network import HostNetwork
from pool_managerd.pool import check_model

NETWORK = HostNetwork("127.0.0.1", "127.0.0.1", "127.0.0.1", True)
COMMAND = "[/venv/bin/python, -m, vllm.entrypoints.openai.api_server]"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_hf_model(tmp_path_factory.mktemp("hf") / "tiny-hf")


def manager_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: Path, **pool: object
) -> Path:
    monkeypatch.setenv("LLORCH_JOIN_TOKEN", "t")
    fields = {"ctx": 512, "slots": 2, **pool}
    extra = "".join(f"\n    {name}: {value}" for name, value in fields.items())
    path = tmp_path / "m.yaml"
    path.write_text(
        "orchestrator: 127.0.0.1:8090\n"
        f"state_dir: {tmp_path / 'state'}\n"
        "pools:\n"
        f"  - id: v\n    engine: vllm\n    model: {model}\n"
        f"    engine_command: {COMMAND}{extra}\n"
    )
    return path


def test_a_vllm_pool_launches_the_api_server_on_the_folder_with_lean_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, folder: Path
) -> None:
    manager = load_config(manager_config(tmp_path, monkeypatch, folder))
    (pool,) = manager.pools
    started = launch(pool, manager, tmp_path / "v.port", "secret-key", NETWORK)
    argv = list(started.command)
    assert argv[:3] == ["/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server"]

    def flag(name: str) -> str:
        return argv[argv.index(name) + 1]

    assert flag("--model") == str(folder.resolve())
    assert flag("--served-model-name") == (pool.model_id or pool.id)
    assert pool.model_id or pool.id
    assert (flag("--host"), flag("--port")) == ("127.0.0.1", str(started.port))
    assert (flag("--max-model-len"), flag("--max-num-seqs")) == ("512", "2")
    assert flag("--dtype") == "float32"
    assert {"--enforce-eager", "--disable-uvicorn-access-log"} <= set(argv)
    assert flag("--kv-cache-memory-bytes") == str(16 << 20)
    assert started.adapter == ENGINE_ADAPTERS["vllm"] == "vllm"
    # the key travels in the environment only (SEC-02); the hub is never asked
    assert "secret-key" not in " ".join(argv)
    assert started.env["VLLM_API_KEY"] == "secret-key"
    assert started.env["HF_HUB_OFFLINE"] == "1"
    assert started.env["VLLM_NO_USAGE_STATS"] == "1"
    assert started.env["VLLM_CACHE_ROOT"] == str(manager.state_dir / "cache" / "vllm")


def test_the_kv_cache_covers_ctx_times_slots_tokens_of_the_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, folder: Path
) -> None:
    path = manager_config(tmp_path, monkeypatch, folder, ctx=2048, slots=16)
    (pool,) = load_config(path).pools
    # 2 layers x 2 KV heads x (32 + 32) x 4 bytes = 1 KiB a token; 32768 tokens = 32 MiB
    assert vllm_kv_cache_bytes(pool) == 32 << 20


def test_a_vllm_pool_needs_a_model_folder_and_a_gguf_pool_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, folder: Path
) -> None:
    gguf = write_tiny_model(tmp_path / "tiny.gguf")
    (on_folder,) = load_config(manager_config(tmp_path, monkeypatch, folder)).pools
    (on_file,) = load_config(manager_config(tmp_path, monkeypatch, gguf)).pools
    assert check_model(on_folder) == (sha256_folder(folder), "")
    digest, error = check_model(on_file)
    assert digest == "" and "needs a Hugging Face model folder" in error
    llama = replace(on_folder, engine="llamacpp", engine_command=("/bin/llama-server",))
    assert "needs a GGUF file" in check_model(llama)[1]


def test_a_broken_model_folder_fails_the_check_saying_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = write_tiny_hf_model(tmp_path / "broken", TinyHfModelSpec(layers=1))
    (broken / "config.json").unlink()
    (pool,) = load_config(manager_config(tmp_path, monkeypatch, broken)).pools
    digest, error = check_model(pool)
    assert digest == ""
    assert error.startswith("model check failed") and "has no config.json" in error


def test_an_unknown_engine_is_still_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, folder: Path
) -> None:
    path = manager_config(tmp_path, monkeypatch, folder)
    path.write_text(path.read_text().replace("engine: vllm", "engine: vllm-turbo"))
    with pytest.raises(ConfigError):
        load_config(path)


@pytest.mark.parametrize("setting", ["gpu_layers: 10", "embeddings: true"])
def test_llama_cpp_only_settings_on_a_vllm_pool_are_refused_not_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, folder: Path, setting: str
) -> None:
    name, _, value = setting.partition(": ")
    path = manager_config(tmp_path, monkeypatch, folder, **{name: value})
    with pytest.raises(ConfigError, match="engine vllm takes no gpu_layers or embeddings"):
        load_config(path)


def test_a_reload_to_a_model_folder_is_estimated_with_the_folders_facts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, folder: Path
) -> None:
    from catalog_core import estimate_hf_memory, inspect_hf_folder
    from pool_managerd.reload import _inspect

    (pool,) = load_config(manager_config(tmp_path, monkeypatch, folder)).pools
    candidate = _inspect(pool)
    expected = estimate_hf_memory(
        inspect_hf_folder(folder), kv_cache_tokens=512 * 2, load_dtype="F32"
    )
    assert candidate.error == "" and candidate.digest == sha256_folder(folder)
    assert candidate.needed_bytes == expected.total * pool.replicas > 0


# -- vllm-inproc: our worker hosting vLLM's AsyncLLM (WRK-03) -------------------------------

WORKER_COMMAND = "[/vllm-inproc-venv/bin/python, -m, worker_adapters.worker]"


def inproc_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: Path) -> Path:
    path = manager_config(tmp_path, monkeypatch, model)
    text = path.read_text().replace("engine: vllm", "engine: vllm-inproc")
    path.write_text(text.replace(COMMAND, WORKER_COMMAND))
    return path


def test_a_vllm_inproc_pool_runs_the_worker_on_the_vllm_venvs_python_with_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, folder: Path
) -> None:
    manager = load_config(inproc_config(tmp_path, monkeypatch, folder))
    (pool,) = manager.pools
    port_file = tmp_path / "v.port"
    started = launch(pool, manager, port_file, "secret-key", NETWORK)
    argv = list(started.command)
    assert argv[:3] == ["/vllm-inproc-venv/bin/python", "-m", "worker_adapters.worker"]

    def flag(name: str) -> str:
        return argv[argv.index(name) + 1]

    assert (flag("--engine"), flag("--model")) == ("vllm", str(folder.resolve()))
    assert (flag("--ctx"), flag("--slots")) == ("512", "2")
    assert flag("--port-file") == str(port_file) and started.port is None  # it reports it
    assert started.adapter == ENGINE_ADAPTERS["vllm-inproc"] == "native"
    assert "secret-key" not in " ".join(argv)
    assert started.env["LLORCH_WORKER_API_KEY"] == "secret-key"
    assert started.env["HF_HUB_OFFLINE"] == "1" and started.env["VLLM_NO_USAGE_STATS"] == "1"
    assert started.env["VLLM_CACHE_ROOT"] == str(manager.state_dir / "cache" / "vllm")
    (on_folder,) = manager.pools
    assert check_model(on_folder) == (sha256_folder(folder), "")


def test_a_vllm_inproc_pool_without_its_venvs_worker_command_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, folder: Path
) -> None:
    path = inproc_config(tmp_path, monkeypatch, folder)
    path.write_text(path.read_text().replace(f"    engine_command: {WORKER_COMMAND}\n", ""))
    with pytest.raises(ConfigError, match="engine vllm-inproc needs engine_command"):
        load_config(path)


def test_a_vllm_inproc_pool_refuses_llama_cpp_only_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, folder: Path
) -> None:
    path = inproc_config(tmp_path, monkeypatch, folder)
    path.write_text(path.read_text() + "    gpu_layers: 4\n")
    with pytest.raises(ConfigError, match="engine vllm-inproc takes no gpu_layers"):
        load_config(path)
