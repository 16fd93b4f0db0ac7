"""A wheelhouse of built wheels, so that a new engine venv does not compile a package again.

llama-cpp-python ships only as an sdist, so every venv that pins it needs a wheel built
from it: about five minutes of compiling on two cores. uv keeps the wheels it builds in
its cache and reuses one while the sdist's cached download is fresh; but a file host that
sends no caching headers (the one these machines reach sends none) makes every cached
download stale, so uv fetches the sdist again, files it under a new revision and compiles
it again (measured: four revisions, four compiles, in seven minutes).

The wheelhouse sidesteps that. Before an install, `seed_wheelhouse` copies the wheels uv
has built for the pinned sdist versions (`NAME==VERSION` pins only) from uv's cache
(`uv cache dir`, then `sdists-v*/pypi/NAME/VERSION/<revision>/*.whl`, or
`sdists-v*/index/<index>/NAME/VERSION/...` for other registries) into the wheelhouse, and
the install passes `--find-links WHEELHOUSE`: uv prefers a compatible wheel to an sdist
of the same version, so it installs that one and builds nothing. Where neither holds a
wheel, uv builds it during the install, and the next venv finds it in uv's cache.

uv's cache layout is not a stable interface: if it changes, seeding finds nothing and the
install compiles, as it would have without the wheelhouse. The newest wheel
found is used: builds made with build settings (uv files those under a hash of the
settings, e.g. the workspace's AMX-free llama-cpp-python) are found too, so an engine venv
gets the same build as the workspace.

Blocking (file copies): call through `asyncio.to_thread` from async code.
"""

from __future__ import annotations

import os
import re
import shutil
import zipfile
from collections.abc import Iterable
from pathlib import Path

__all__ = ["exact_pins", "seed_wheelhouse", "wheel_prefix"]

_PIN = re.compile(  # NAME[extras]==VERSION
    r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*==\s*([0-9A-Za-z.+!_-]+)\s*$"
)


def wheel_prefix(distribution: str) -> str:
    """The name part of a wheel's file name: `llama-cpp-python` -> `llama_cpp_python`."""
    return re.sub(r"[-_.]+", "_", distribution).lower()


def exact_pins(pins: Iterable[str]) -> list[tuple[str, str]]:
    """(distribution, version) of every `NAME[extras]==VERSION` pin; others are skipped."""
    found = []
    for pin in pins:
        match = _PIN.match(pin)
        if match is not None:
            found.append((match[1], match[2]))
    return found


def seed_wheelhouse(wheelhouse: Path, uv_cache: Path | None, pins: Iterable[str]) -> list[Path]:
    """Copy into `wheelhouse` the wheels uv built for `pins` that it lacks (see module
    doc); returns the wheels copied. `uv_cache` None (unknown): copies nothing."""
    wheelhouse.mkdir(parents=True, exist_ok=True)
    if uv_cache is None:
        return []
    seeded: list[Path] = []
    for distribution, version in exact_pins(pins):
        pattern = f"{wheel_prefix(distribution)}-{version}-*.whl"
        if any(wheelhouse.glob(pattern)):
            continue
        built = _newest_valid(_built_by_uv(uv_cache, distribution, version, pattern))
        if built is not None:
            seeded.append(_copy_into(built, wheelhouse))
    return seeded


def _built_by_uv(cache: Path, distribution: str, version: str, pattern: str) -> list[Path]:
    names = {distribution, distribution.lower(), re.sub(r"[-_.]+", "-", distribution).lower()}
    found: list[Path] = []
    for name in names:
        for base in (f"sdists-v*/pypi/{name}/{version}", f"sdists-v*/index/*/{name}/{version}"):
            found += cache.glob(f"{base}/*/{pattern}")
            # A build with build settings (the workspace's `extra-build-variables` for
            # llama-cpp-python) is filed one level deeper, under a hash of the settings.
            found += cache.glob(f"{base}/*/*/{pattern}")
    return found


def _newest_valid(wheels: list[Path]) -> Path | None:
    """The newest wheel that is a whole zip archive (not one uv is still writing)."""
    for wheel in sorted(set(wheels), key=_mtime, reverse=True):
        if zipfile.is_zipfile(wheel):
            return wheel
    return None


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _copy_into(wheel: Path, wheelhouse: Path) -> Path:
    target = wheelhouse / wheel.name
    scratch = wheelhouse / f".{wheel.name}.{os.getpid()}.copying"
    shutil.copyfile(wheel, scratch)
    scratch.replace(target)
    return target
