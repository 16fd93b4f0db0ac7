"""Container mode (issue 13 item 2): the `docker|podman run` launch a pool manager builds
for `tgi`, and for `vllm` and `triton` when a pool says `container:`, and the config rules
around it. Pure: nothing is started here (the real run: ci/harness/tests/test_tgi_container.py).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from catalog_core import write_tiny_hf_model
from pool_managerd.config import ConfigError, ContainerConfig, ManagerConfig, load_config
from pool_managerd.container_launch import (
    container_name,
    container_runtime,
    device_ids,
    manager_id,
)
from pool_managerd.engines import launch, serves_tls
from pool_managerd.network import HostNetwork
from provisioners.plan.engine_specs import ENGINES

NETWORK = HostNetwork("127.0.0.1", "127.0.0.1", "127.0.0.1", True)
KEY = "sk-the-pool-key-value-1234"
VLLM_IMAGE = (
    "docker.io/vllm/vllm-openai:v0.11.0"
    "@sha256:014a95f21c9edf6abe0aea6b07353f96baa4ec291c427bb1176dc7c93a85845c"
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_hf_model(tmp_path_factory.mktemp("hf") / "tiny-hf")


def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pool: str) -> ManagerConfig:
    monkeypatch.setenv("LLORCH_JOIN_TOKEN", "t")
    path = tmp_path / "m.yaml"
    path.write_text(
        "orchestrator: 127.0.0.1:8090\n"
        "host_id: h1\n"
        f"state_dir: {tmp_path / 'state'}\n"
        "pools:\n"
        f"  - {pool}\n"
    )
    return load_config(path)


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_a_tgi_pool_runs_tgis_pinned_image_with_labels_port_model_mount_and_key_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, folder: Path
) -> None:
    manager = config(
        tmp_path,
        monkeypatch,
        f"{{id: t, engine: tgi, model: {folder}, ctx: 512, slots: 3, container: {{}}}}",
    )
    (pool,) = manager.pools
    started = launch(pool, manager, tmp_path / "state/run/t-r0.port", KEY, NETWORK)
    argv = list(started.command)
    name = container_name(manager, "t-r0")
    assert argv[:5] == ["docker", "run", "--rm", "--name", name]
    image = ENGINES["tgi"].container.image  # type: ignore[union-attr]
    at = argv.index(image)
    assert argv[at + 1 :] == [
        "--model-id",
        "/model",
        "--hostname",
        "0.0.0.0",
        "--port",
        "80",
        "--max-total-tokens",
        "512",
        "--max-input-tokens",
        "511",
        "--max-concurrent-requests",
        "3",
    ]
    runtime_flags = argv[:at]
    labels = [runtime_flags[i + 1] for i, a in enumerate(runtime_flags) if a == "--label"]
    assert labels == [f"llorch.manager={manager_id(manager)}", "llorch.pool=t"]
    assert flag(runtime_flags, "-p") == f"127.0.0.1:{started.port}:80"
    mounts = [runtime_flags[i + 1] for i, a in enumerate(runtime_flags) if a == "-v"]
    assert f"{folder.resolve()}:/model:ro" in mounts
    assert flag(runtime_flags, "-e") == "API_KEY"  # the name only
    assert not any(KEY in part for part in argv), "the key's value is on the command line"
    assert started.env == {"API_KEY": KEY}
    assert "--gpus" not in argv and "--device" not in argv  # a cpu pool
    assert started.adapter == "tgi"
    assert started.container is not None
    assert (started.container.runtime, started.container.name) == ("docker", name)
    assert not started.tls and not serves_tls(pool)


def test_a_vllm_pool_in_container_mode_runs_the_image_pinned_by_digest_with_package_args(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, folder: Path
) -> None:
    manager = config(
        tmp_path,
        monkeypatch,
        f"{{id: v, engine: vllm, model: {folder}, ctx: 256, slots: 2, device: gpu1, "
        "container: {runtime: podman}}",
    )
    (pool,) = manager.pools
    started = launch(pool, manager, tmp_path / "v-r0.g2.port", KEY, NETWORK)
    argv = list(started.command)
    assert argv[0] == "podman" and flag(argv, "--name") == container_name(manager, "v-r0.g2")
    at = argv.index(VLLM_IMAGE)
    assert "@sha256:" in argv[at]
    engine = argv[at + 1 :]
    assert flag(engine, "--model") == "/model"
    assert (flag(engine, "--host"), flag(engine, "--port")) == ("0.0.0.0", "8000")
    assert (flag(engine, "--max-model-len"), flag(engine, "--max-num-seqs")) == ("256", "2")
    assert flag(argv[:at], "-p") == f"127.0.0.1:{started.port}:8000"
    assert flag(argv[:at], "--device") == "nvidia.com/gpu=1"  # podman: CDI names
    assert "--ipc=host" in argv[:at]
    assert "VLLM_API_KEY" in argv[:at] and started.env == {"VLLM_API_KEY": KEY}
    assert not any(KEY in part for part in argv)
    assert started.adapter == "vllm"


def test_a_triton_pool_in_container_mode_runs_tritonserver_on_the_model_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repository = tmp_path / "repo"
    repository.mkdir()
    manager = config(
        tmp_path,
        monkeypatch,
        f"{{id: tr, engine: triton, model: {repository}, device: gpu0, "
        "container: {image: registry.example/triton:1}}",
    )
    (pool,) = manager.pools
    started = launch(pool, manager, tmp_path / "tr-r0.port", KEY, NETWORK)
    argv = list(started.command)
    at = argv.index("registry.example/triton:1")
    assert argv[at + 1 :] == [
        "tritonserver",
        "--model-repository=/model",
        "--http-port=8000",
        "--grpc-port=8001",
        "--metrics-port=8002",
    ]
    assert flag(argv[:at], "--gpus") == '"device=0"'  # docker
    assert "-e" not in argv and started.env == {}  # Triton has no key: loopback only


def test_an_ipv6_engine_bind_address_is_published_in_brackets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, folder: Path
) -> None:
    manager = config(
        tmp_path, monkeypatch, f"{{id: t, engine: tgi, model: {folder}, container: {{}}}}"
    )
    (pool,) = manager.pools
    network = HostNetwork("::1", "::1", "::1", True)
    started = launch(pool, manager, tmp_path / "t-r0.port", KEY, network)
    assert flag(list(started.command), "-p") == f"[::1]:{started.port}:80"


def test_a_pool_without_a_key_passes_no_key_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, folder: Path
) -> None:
    manager = config(
        tmp_path, monkeypatch, f"{{id: t, engine: tgi, model: {folder}, container: {{}}}}"
    )
    (pool,) = manager.pools
    started = launch(pool, manager, tmp_path / "t-r0.port", "", NETWORK)
    assert "API_KEY" not in started.command
    assert started.env == {}


def test_containers_of_two_pool_managers_and_two_replicas_have_distinct_names(
    tmp_path: Path,
) -> None:
    one = ManagerConfig("o:1", host_id="h", state_dir=tmp_path / "a")
    two = replace(one, state_dir=tmp_path / "b")
    assert manager_id(one) != manager_id(two)
    assert manager_id(one).startswith("h.")
    names = {container_name(m, r) for m in (one, two) for r in ("p-r0", "p-r1")}
    assert len(names) == 4


@pytest.mark.parametrize(
    ("device", "expected"),
    [("cpu", ()), ("gpu0", ("0",)), ("gpu12", ("12",)), ("GPU-ab", ("GPU-ab",))],
)
def test_a_pools_device_names_the_gpus_passed_to_the_runtime(
    device: str, expected: tuple[str, ...]
) -> None:
    assert device_ids(device) == expected


@pytest.mark.parametrize(
    ("pool", "message"),
    [
        ("{id: t, engine: tgi, model: M}", "runs only in a container"),
        (
            "{id: t, engine: llamacpp, model: M, engine_command: [x], container: {}}",
            "no container mode",
        ),
        (
            "{id: t, engine: tgi, model: M, engine_command: [x], container: {}}",
            "exclude each other",
        ),
        ("{id: t, engine: vllm, model: M, gpu_layers: 3, container: {}}", "no gpu_layers"),
        ("{id: t, engine: tgi, model: M, container: {runtime: lxc}}", "container.runtime"),
        ("{id: t, engine: tgi, model: M, container: {imag: x}}", "imag"),
        ("{id: t, engine: tgi, model: M, container: {image: '-v /:/x'}}", "container.image"),
    ],
)
def test_container_settings_that_cannot_be_honoured_are_config_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pool: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        config(tmp_path, monkeypatch, pool.replace("M", str(tmp_path)))


def test_container_config_defaults_to_docker_and_the_pinned_image() -> None:
    assert ContainerConfig() == ContainerConfig(image="", runtime="docker")


@pytest.mark.parametrize(
    ("cmdline", "runtime"),
    [
        (("docker", "run", "--rm"), "docker"),
        (("/usr/bin/podman", "run", "--rm"), "/usr/bin/podman"),
        (("docker", "ps"), ""),
        (("/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server"), ""),
        ((), ""),
    ],
)
def test_recovery_finds_the_container_runtime_in_an_engine_record_command_line(
    cmdline: tuple[str, ...], runtime: str
) -> None:
    assert container_runtime(cmdline) == runtime
