"""The wheelhouse finds the wheels uv built, wherever uv's cache files them (PRV-02)."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from provisioners.engines.wheels import seed_wheelhouse

WHEEL = "llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl"


def _wheel(path: Path, payload: str, mtime: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("payload.txt", payload)
    os.utime(path, (mtime, mtime))
    return path


def _payload(wheel: Path) -> str:
    with zipfile.ZipFile(wheel) as archive:
        return archive.read("payload.txt").decode()


def test_the_newest_build_is_seeded_including_one_filed_under_its_build_settings(
    tmp_path: Path,
) -> None:
    cache = tmp_path / "uv-cache"
    version_dir = cache / "sdists-v11" / "pypi" / "llama-cpp-python" / "0.3.36"
    _wheel(version_dir / "rev1" / WHEEL, "plain build", mtime=1_000)
    _wheel(version_dir / "rev2" / "a9f1a98c6e4b3c7c" / WHEEL, "with build settings", 2_000)
    house = tmp_path / "wheels"
    seeded = seed_wheelhouse(house, cache, ["llama-cpp-python[server]==0.3.36", "numpy<2"])
    assert [p.name for p in seeded] == [WHEEL]
    assert _payload(house / WHEEL) == "with build settings"


def test_nothing_is_seeded_without_an_exact_pin_or_a_known_cache(tmp_path: Path) -> None:
    cache = tmp_path / "uv-cache"
    _wheel(cache / "sdists-v11" / "pypi" / "llama-cpp-python" / "0.3.36" / "r" / WHEEL, "x", 1)
    assert seed_wheelhouse(tmp_path / "a", cache, ["llama-cpp-python>=0.3"]) == []
    assert seed_wheelhouse(tmp_path / "b", None, ["llama-cpp-python==0.3.36"]) == []
    assert not any((tmp_path / "a").iterdir())
