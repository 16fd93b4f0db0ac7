"""`file:` refs stay inside the allowed roots (SEC-03); hub failures map to our errors."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import huggingface_hub.constants
import pytest
from catalog_core import (
    CatalogStore,
    inspect_hf_folder,
    sha256_file,
    sha256_folder,
    write_tiny_hf_model,
    write_tiny_model,
)
from huggingface_hub.errors import LocalEntryNotFoundError
from provisioners.models.hub import HubSettings, map_hub_error
from provisioners.testing import RangeFileServer

from provisioners import (
    DownloadFailed,
    ModelDigestMismatch,
    ModelProvisioner,
    ModelProvisionerSettings,
    NotAModel,
    RefRefused,
    SourceNotFound,
    SourceUnreachable,
)

from .conftest import files_under


def _outside_file(root: Path) -> Path:
    return write_tiny_model(root.parent / "outside.gguf")


ESCAPES: dict[str, Callable[[Path], str]] = {
    "dot-dot": lambda root: f"{root}/../{_outside_file(root).name}",
    "absolute path elsewhere": lambda root: str(_outside_file(root)),
    "symlinked file": lambda root: _link(root / "link.gguf", _outside_file(root)),
    "linked folder": lambda root: _link(root / "d", _outside_file(root).parent) + "/outside.gguf",
    "sibling with the root as prefix": lambda root: str(
        write_tiny_model(_mkdir(root.parent / (root.name + "-evil")) / "m.gguf")
    ),
}


def _link(link: Path, target: Path) -> str:
    link.symlink_to(target)
    return str(link)


def _mkdir(folder: Path) -> Path:
    folder.mkdir()
    return folder


@pytest.mark.parametrize("escape", sorted(ESCAPES))
async def test_file_refs_escaping_the_allowed_roots_are_refused(
    escape: str, provisioner: ModelProvisioner, allowed_root: Path, store: CatalogStore
) -> None:
    path = ESCAPES[escape](allowed_root)
    with pytest.raises(RefRefused, match="outside the allowed roots"):
        await provisioner.provision(f"file:{path}")
    assert store.list_models().items == ()


async def test_a_file_inside_a_root_is_registered_in_place_by_its_real_path(
    provisioner: ModelProvisioner, allowed_root: Path, store: CatalogStore, models_dir: Path
) -> None:
    model = write_tiny_model(_mkdir(allowed_root / "sub") / "tiny.gguf")
    link = _link(allowed_root / "alias.gguf", model)
    entry = await provisioner.provision(f"file:{link}", sha256=sha256_file(model))
    assert entry.local_path == str(model) and entry.ref == f"file:{link}"
    assert (entry.id, entry.architecture, entry.layers, entry.chat_template) == (
        "alias",
        "llama",
        2,
        True,
    )
    assert store.get_model("alias") == entry
    assert files_under(models_dir) == []  # nothing copied


async def test_a_missing_file_a_folder_that_is_no_model_and_a_non_model_are_refused(
    provisioner: ModelProvisioner, allowed_root: Path, store: CatalogStore
) -> None:
    with pytest.raises(SourceNotFound):
        await provisioner.provision(f"file:{allowed_root}/missing.gguf")
    folder = _mkdir(allowed_root / "folder.gguf")
    with pytest.raises(NotAModel, match=r"config\.json"):
        await provisioner.provision(f"file:{folder}")
    assert folder.is_dir()  # the operator's folder is never deleted
    fifo = allowed_root / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(RefRefused, match="neither a regular file nor a folder"):
        await provisioner.provision(f"file:{fifo}")
    junk = allowed_root / "junk.gguf"
    junk.write_bytes(b"not a model" * 100)
    with pytest.raises(NotAModel):
        await provisioner.provision(f"file:{junk}")
    assert junk.exists()  # the operator's file is never deleted
    assert store.list_models().items == ()


async def test_a_hugging_face_folder_inside_a_root_is_registered_in_place_for_vllm(
    provisioner: ModelProvisioner, allowed_root: Path, store: CatalogStore, models_dir: Path
) -> None:
    folder = write_tiny_hf_model(allowed_root / "tiny-hf")
    digest = sha256_folder(folder)
    entry = await provisioner.provision(f"file:{folder}", sha256=digest)
    info = inspect_hf_folder(folder)
    assert (entry.id, entry.local_path, entry.sha256) == ("tiny-hf", str(folder), digest)
    assert (entry.format, entry.architecture, entry.quantization) == (
        "safetensors",
        "LlamaForCausalLM",
        "F32",
    )
    assert (entry.size, entry.trained_context, entry.layers) == (info.file_bytes, 2048, 2)
    assert entry.chat_template and store.get_model("tiny-hf") == entry
    assert files_under(models_dir) == []  # nothing copied
    again = await provisioner.provision(f"file:{folder}")
    assert again == entry  # the catalog's entry, reused: the folder is unchanged
    (folder / "config.json").write_text((folder / "config.json").read_text() + " ")
    with pytest.raises(ModelDigestMismatch):
        await provisioner.provision(f"file:{folder}", sha256=digest)


async def test_without_allowed_roots_every_file_ref_is_refused(
    store: CatalogStore, tmp_path: Path
) -> None:
    model = write_tiny_model(tmp_path / "tiny.gguf")
    settings = ModelProvisionerSettings(models_dir=tmp_path / "models")
    async with ModelProvisioner(store, settings) as provisioner:
        with pytest.raises(RefRefused, match="no allowed roots"):
            await provisioner.provision(f"file:{model}")


def _hub_settings(tmp_path: Path, endpoint: str) -> ModelProvisionerSettings:
    return ModelProvisionerSettings(
        models_dir=tmp_path / "models", hub=HubSettings(endpoint=endpoint)
    )


async def test_an_unreachable_hub_is_a_retryable_error_and_registers_nothing(
    store: CatalogStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Offline mode makes the library refuse every request before it opens a socket; the
    # endpoint is loopback as well, so nothing can leave this machine either way.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    settings = _hub_settings(tmp_path, "http://127.0.0.1:9")
    async with ModelProvisioner(store, settings) as provisioner:
        with pytest.raises(SourceUnreachable, match="cannot be reached") as caught:
            await provisioner.provision("hf:org/repo@main/tiny.gguf")
    assert caught.value.retryable
    assert isinstance(caught.value.__cause__, LocalEntryNotFoundError)
    assert store.list_models().items == ()
    left = files_under(tmp_path / "models")
    assert [path for path in left if ".staging" not in path.parts] == []  # only resume state


async def test_a_file_the_hub_does_not_have_is_not_found(
    store: CatalogStore, tmp_path: Path
) -> None:
    with RangeFileServer({}) as hub:  # a loopback stand-in answering 404 to everything
        settings = _hub_settings(tmp_path, hub.url(""))
        async with ModelProvisioner(store, settings) as provisioner:
            with pytest.raises(SourceNotFound, match="not found on the hub"):
                await provisioner.provision("hf:org/repo/tiny.gguf")
    asked = [(request.method, request.path) for request in hub.requests]
    assert asked == [("HEAD", "/org/repo/resolve/main/tiny.gguf")]


def test_a_hub_failure_without_a_cause_reads_as_unreachable() -> None:
    error = map_hub_error(LocalEntryNotFoundError("no connection"), "org/repo@main/x.gguf")
    assert isinstance(error, SourceUnreachable) and "org/repo@main/x.gguf" in str(error)
    assert isinstance(map_hub_error(OSError(28, os.strerror(28)), "x"), DownloadFailed)
