"""Fixtures for the model provisioner tests: a real catalog file, a real fixture model
and a real HTTP server on loopback serving it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from catalog_core import CatalogStore, write_tiny_model
from provisioners.testing import RangeFileServer

from provisioners import DownloadPolicy, ModelProvisioner, ModelProvisionerSettings

CLOCK_MS = 1_700_000_000_000


@pytest.fixture(scope="session")
def model_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return write_tiny_model(tmp_path_factory.mktemp("fixture") / "tiny.gguf").read_bytes()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CatalogStore]:
    with CatalogStore(tmp_path / "catalog.sqlite") as opened:
        yield opened


@pytest.fixture
def server(model_bytes: bytes) -> Iterator[RangeFileServer]:
    with RangeFileServer({"models/tiny.gguf": model_bytes}) as running:
        yield running


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    return tmp_path / "models"


@pytest.fixture
def allowed_root(tmp_path: Path) -> Path:
    root = tmp_path / "allowed"
    root.mkdir()
    return root


@pytest.fixture
def settings(models_dir: Path, allowed_root: Path) -> ModelProvisionerSettings:
    return ModelProvisionerSettings(
        models_dir=models_dir,
        allowed_roots=(allowed_root,),
        download=DownloadPolicy(attempts=3, backoff_s=0.0),
        timeout_s=30.0,
    )


@pytest.fixture
async def provisioner(
    store: CatalogStore, settings: ModelProvisionerSettings
) -> AsyncIterator[ModelProvisioner]:
    async with ModelProvisioner(store, settings, clock_ms=lambda: CLOCK_MS) as opened:
        yield opened


def files_under(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file()) if folder.exists() else []


def read_file(path: Path | str) -> bytes | None:
    """The file's bytes, or None when it is not there (a plain function: tests are async)."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        return None
