"""What a prepared engine hands the supervisor (PRV-02, SEC-02): container command lines,
prepared engines rebuilt from catalog entries, and the engine output the probes read."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from catalog_core import EngineEntry
from provisioners.engines import PreparedEngine, prepared_engine
from provisioners.engines.wheels import exact_pins, wheel_prefix
from provisioners.plan.containers import ContainerLaunch, container_run
from provisioners.plan.engine_specs import ENGINES
from provisioners.plan.probes import (
    BuildInfo,
    ServerFlags,
    parse_build_progress,
    parse_first_version,
    parse_llama_server_help,
    parse_llama_server_version,
)

KEY = "sk-pool-secret-1234"


def test_a_docker_container_gets_gpus_loopback_ports_mounts_and_the_key_by_name_only() -> None:
    launch = ContainerLaunch(
        "pool-a", {"http": 18000}, devices=("0", "1"), cache_dir="/c", model_dir="/m",
        api_key=KEY,
    )  # fmt: skip
    command = container_run("/usr/bin/docker", "vllm/vllm-openai:v0.11.0", "vllm", launch)
    argv = command.argv
    assert argv[:5] == ("/usr/bin/docker", "run", "--rm", "--name", "pool-a")
    assert argv[-1] == "vllm/vllm-openai:v0.11.0"
    assert argv[argv.index("--gpus") : argv.index("--gpus") + 2] == ("--gpus", '"device=0,1"')
    assert "127.0.0.1:18000:8000" in argv and "--ipc=host" in argv
    profile = ENGINES["vllm"].container
    assert profile is not None and profile.cache_path is not None
    image_cache = profile.cache_path  # where the container keeps its cache (not a host path)
    assert f"/c:{image_cache}" in argv and "/m:/models:ro" in argv
    assert f"HF_HOME={image_cache}" in argv  # vLLM is pointed at the mounted cache
    assert argv[argv.index("-e") : argv.index("-e") + 2] == ("-e", "VLLM_API_KEY")
    assert all(KEY not in part for part in argv)
    assert command.env == {"VLLM_API_KEY": KEY}


def test_a_podman_container_names_each_gpu_by_its_cdi_name() -> None:
    launch = ContainerLaunch("p", {"http": 3001}, devices=("0", "GPU-abc"))
    argv = container_run("podman", "tgi:3", "tgi", launch).argv
    devices = [argv[i + 1] for i, part in enumerate(argv) if part == "--device"]
    assert devices == ["nvidia.com/gpu=0", "nvidia.com/gpu=GPU-abc"]
    assert "--gpus" not in argv and "127.0.0.1:3001:80" in argv


def test_a_cpu_container_has_no_gpu_flag_and_triton_maps_all_three_ports() -> None:
    ports = {"http": 1, "grpc": 2, "metrics": 3}
    argv = container_run("docker", "t", "triton", ContainerLaunch("t", ports)).argv
    assert "--gpus" not in argv and "--device" not in argv
    assert {"127.0.0.1:1:8000", "127.0.0.1:2:8001", "127.0.0.1:3:8002"} <= set(argv)


@pytest.mark.parametrize(
    ("engine", "launch", "reason"),
    [
        ("triton", ContainerLaunch("t", {}, api_key=KEY), "no API key support"),
        ("tgi", ContainerLaunch("t", {"grpc": 1}), "no such port"),
        ("triton", ContainerLaunch("t", {}, cache_dir="/c"), "no cache folder"),
        ("llamacpp", ContainerLaunch("t", {}), "no container image"),
    ],
)
def test_a_launch_the_engine_cannot_honour_is_refused(
    engine: str, launch: ContainerLaunch, reason: str
) -> None:
    with pytest.raises(ValueError, match=reason):
        container_run("docker", "img", engine, launch)


def test_prepared_engines_are_rebuilt_from_catalog_entries_alone() -> None:
    flags = ServerFlags("value", metrics=True, api_key=True, api_key_file=True)
    server = EngineEntry(
        "llamacpp-source-abc", "llamacpp", "0.5.0-dev", "source", "/e/llama-server",
        extra=flags.to_extra(),
    )  # fmt: skip
    prepared = prepared_engine(server)
    assert prepared.command == ("/e/llama-server",) and prepared.server_flags == flags
    assert (prepared.api_key_env, prepared.ports) == ("LLAMA_API_KEY", {"http": 8080})
    venv = EngineEntry("py", "llamacpp-server-py", "0.3.36", "package", "/v")
    assert prepared_engine(venv).command == ("/v/bin/python", "-m", "llama_cpp.server")
    vllm = EngineEntry("v", "vllm", "0.11.0", "package", "/v")
    assert prepared_engine(vllm).command == (
        "/v/bin/python",
        "-m",
        "vllm.entrypoints.openai.api_server",
    )
    image = EngineEntry(
        "c", "tgi", "3.3.5", "container", "ghcr.io/tgi:3", extra={"runtime_path": "/bin/podman"}
    )
    container = prepared_engine(image)
    line = container.container_command(ContainerLaunch("p", {"http": 9}))
    assert line.argv[0] == "/bin/podman" and line.argv[-1] == "ghcr.io/tgi:3"
    with pytest.raises(ValueError, match="not a container engine"):
        prepared.container_command(ContainerLaunch("p", {}))
    assert isinstance(prepared, PreparedEngine)


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        (
            "version: 0.5.0-dev (build 0, commit unknown)\nbuilt with cc",
            BuildInfo("0.5.0-dev", "b0-unknown"),
        ),
        ("load_backend: ...\nversion: 6500 (1a2b3c4)\n", BuildInfo("b6500", "b6500-1a2b3c4")),
        ("llama-server: no such option", None),
    ],
)
def test_both_llama_server_version_forms_are_read(output: str, expected: BuildInfo) -> None:
    assert parse_llama_server_version(output) == expected


def test_the_flag_forms_a_llama_server_documents_are_read() -> None:
    recent = "-fa,   --flash-attn [on|off|auto]  set Flash Attention\n--metrics\n--api-key KEY"
    flags = parse_llama_server_help(recent)
    assert flags == ServerFlags("value", metrics=True, api_key=True, api_key_file=False)
    assert flags.flash_attn_args(None) == ("-fa", "auto")
    old = parse_llama_server_help("-fa, --flash-attn   enable Flash Attention\n--api-key-file F")
    assert (old.flash_attn, old.api_key, old.api_key_file) == ("switch", False, True)
    assert old.flash_attn_args(True) == ("-fa",) and old.flash_attn_args(False) == ()
    assert ServerFlags.from_extra(flags.to_extra()) == flags
    assert ServerFlags.from_extra({}) is None


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("[12/80] Building CXX object x.o", (12, 80)),
        ("[ 45%] Building CXX object x.o", (45, 100)),
        ("[100%] Linking CXX executable bin/llama-server", (100, 100)),
        ("-- Configuring done", None),
    ],
)
def test_build_progress_is_read_from_ninja_and_make_lines(
    line: str, expected: tuple[int, int] | None
) -> None:
    assert parse_build_progress(line) == expected


def test_the_first_version_in_an_answer_is_found() -> None:
    assert parse_first_version("INFO ... vllm 0.11.0\n") == "0.11.0"
    assert parse_first_version("no digits here") is None


def test_only_exact_pins_name_wheels_to_reuse() -> None:
    pins = ["llama-cpp-python[server]==0.3.36", "numpy<2", "Foo.Bar==1.0", "x>=1,==2"]
    assert exact_pins(pins) == [("llama-cpp-python", "0.3.36"), ("Foo.Bar", "1.0")]
    assert wheel_prefix("Foo.Bar-baz") == "foo_bar_baz"


def test_the_vllm_container_profile_runs_compose_profiles_image_pinned_by_digest() -> None:
    compose = Path(__file__).resolve().parents[2] / "compose.yaml"
    services = yaml.safe_load(compose.read_text())["services"]
    profile = ENGINES["vllm"].container
    assert profile is not None
    assert "@sha256:" in profile.image and len(profile.image.rpartition(":")[2]) == 64
    assert profile.image.removeprefix("docker.io/") == services["vllm"]["image"]
    launch = ContainerLaunch("pool-v", {"http": 18000})
    argv = container_run("/usr/bin/podman", profile.image, "vllm", launch).argv
    assert argv[-1] == profile.image  # the pinned reference is what runs
