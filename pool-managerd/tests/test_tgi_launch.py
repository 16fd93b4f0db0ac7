"""The `tgi` engine kind: its container run line, environment and config checks.

TGI cannot run on these machines (its image needs an NVIDIA GPU and none here has one
with a container runtime): the launch is built and checked here, never started; the
`tgi` adapter's evidence is TGI's own recorded responses (worker-adapters'
`testing/recordings/tgi/`, from /work/shared/data/tgi-snapshots/).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from catalog_core import sha256_folder, write_tiny_hf_model
from pool_managerd.config import ConfigError, load_config
from pool_managerd.containers import container_image
from pool_managerd.engines import ENGINE_ADAPTERS, launch, serves_tls
from pool_managerd.network import HostNetwork
from pool_managerd.pool import check_model
from provisioners.plan.engine_specs import ENGINES

NETWORK = HostNetwork("127.0.0.1", "127.0.0.1", "127.0.0.1", True)
IMAGE = ENGINES["tgi"].container.image if ENGINES["tgi"].container else ""
COMMAND = f"[/usr/bin/podman, run, --rm, '{IMAGE}']"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_hf_model(tmp_path_factory.mktemp("hf") / "tiny-hf")


def tgi_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: Path, command: str = COMMAND
) -> Path:
    monkeypatch.setenv("LLORCH_JOIN_TOKEN", "t")
    path = tmp_path / "m.yaml"
    path.write_text(
        "orchestrator: 127.0.0.1:8090\n"
        f"state_dir: {tmp_path / 'state'}\n"
        "pools:\n"
        f"  - id: t\n    engine: tgi\n    model: {model}\n"
        f"    engine_command: {command}\n    ctx: 1024\n    slots: 3\n"
    )
    return path


def test_a_tgi_pool_runs_the_pinned_image_on_the_folder_with_the_key_by_name_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, folder: Path
) -> None:
    manager = load_config(tgi_config(tmp_path, monkeypatch, folder))
    (pool,) = manager.pools
    started = launch(pool, manager, tmp_path / "t.port", "secret-key", NETWORK)
    argv = list(started.command)
    image_at = argv.index(IMAGE)
    run, flags = argv[:image_at], argv[image_at + 1 :]
    assert run[:3] == ["/usr/bin/podman", "run", "--rm"]
    assert run[run.index("--name") + 1] == f"llorch-t-{started.port}"  # one name per start
    assert run[run.index("-p") + 1] == f"127.0.0.1:{started.port}:80"  # the image's port
    mounts = [run[i + 1] for i, arg in enumerate(run) if arg == "-v"]
    cache = manager.state_dir / "cache" / "tgi"
    assert mounts == [f"{cache}:/data", f"{folder.resolve()}:/models:ro"]
    assert {"API_KEY", "HF_HUB_OFFLINE=1"} <= {run[i + 1] for i, a in enumerate(run) if a == "-e"}
    assert "--gpus" not in run and "--device" not in run  # no device pinning yet
    assert flags == [
        "--model-id",
        "/models",
        "--max-concurrent-requests",
        "3",
        "--max-input-tokens",
        "1023",
        "--max-total-tokens",
        "1024",
        "--hostname",
        "0.0.0.0",
    ]
    assert "secret-key" not in " ".join(argv) and started.env == {"API_KEY": "secret-key"}
    assert started.adapter == ENGINE_ADAPTERS["tgi"] == "tgi"
    assert not started.tls and not serves_tls(pool)  # plaintext with a key: the pool warns
    assert check_model(pool) == (sha256_folder(folder), "")


def test_a_tgi_pool_without_a_key_passes_none_to_the_container(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, folder: Path
) -> None:
    manager = load_config(tgi_config(tmp_path, monkeypatch, folder))
    started = launch(manager.pools[0], manager, tmp_path / "t.port", "", NETWORK)
    assert "API_KEY" not in started.command and started.env == {}


@pytest.mark.parametrize(
    "command",
    ["[/usr/bin/podman, run, IMAGE]", "[/usr/bin/podman, run, --rm, --privileged]", "[]"],
)
def test_a_tgi_pool_needs_the_provisioned_container_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, folder: Path, command: str
) -> None:
    with pytest.raises(ConfigError, match=r"engine tgi needs engine_command|needs engine_command"):
        load_config(tgi_config(tmp_path, monkeypatch, folder, command))


def test_only_run_rm_image_reads_as_a_container_command() -> None:
    assert container_image(["docker", "run", "--rm", "img:1"]) == ("docker", "img:1")
    assert container_image(["docker", "run", "--rm", "img 1"]) is None
    assert container_image(["docker", "run", "--rm", "img:1", "--x"]) is None
    assert container_image(["", "run", "--rm", "img:1"]) is None
