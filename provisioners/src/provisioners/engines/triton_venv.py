"""Package mode for the Triton engine (a slice of PRV-02): a managed venv holding PyTriton
(which bundles `tritonserver`) and llama-cpp-python, and the argv that runs our engine
program (`triton_llamacpp.py`, shipped beside this module) in it.

The venv is made from Debian's own `/usr/bin/python3.11`, not whatever python is first
on PATH, because the Python-backend stub bundled with PyTriton links Debian's
`libpython3.11`; PyTriton 0.7.0 needs numpy<2. Packages are installed by `uv pip`.
llama-cpp-python ships only as an sdist; measured here, uv compiled it again for each
new venv (5.5 minutes on two idle cores, up to 16 while others built it too) rather
than reusing a wheel it had built before (why: `provisioners.engines.wheels`), so the
install goes through the engines' shared wheelhouse (`<cache root>/wheels`), seeded with
the wheel uv built before, and the finished venv itself is what is cached.

Idempotent and cached: the venv's folder is named by the digest of the interpreter and
the pin list (`triton-<digest>` under the cache root), and a marker file written last
says it is complete. A second call finds the marker and returns at once; a folder
without its marker (an interrupted install) is removed and made again. A file lock
serializes two processes preparing the same venv. Every step is narrated with
`extra={"action": ..., "target": ...}`. Missing tools fail before anything is made,
naming the tool and how to install it (`EngineToolMissing`).

Blocking (subprocesses, file I/O): call through `asyncio.to_thread` from async code.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from provisioners.engines.errors import EngineInstallFailed, EngineToolMissing
from provisioners.engines.prepared import PreparedEngine
from provisioners.engines.wheels import seed_wheelhouse

__all__ = [
    "DEBIAN_PYTHON",
    "ENGINE_SCRIPT",
    "TRITON_PINS",
    "TritonVenvSettings",
    "default_cache_root",
    "prepare_triton_engine",
    "triton_engine_argv",
    "venv_digest",
]

_log = logging.getLogger(__name__)

TRITON_PINS: tuple[str, ...] = ("nvidia-pytriton==0.7.0", "numpy<2", "llama-cpp-python==0.3.36")
DEBIAN_PYTHON = Path("/usr/bin/python3.11")
DEBIAN_LIBPYTHON = Path("/usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0")
ENGINE_SCRIPT = Path(__file__).with_name("triton_llamacpp.py")
CACHE_ENV = "LLORCH_ENGINE_CACHE"
_MARKER = "llorch-engine.json"
_DISTRIBUTIONS = ("nvidia-pytriton", "llama-cpp-python", "numpy")
# A cold llama-cpp-python build takes minutes on two cores; another uv process may hold
# the build's lock meanwhile, and uv's own default wait (300 s) is too short for that.
_INSTALL_TIMEOUT_S = 3600.0
_UV_LOCK_TIMEOUT_S = "3000"
_PYTHON_REMEDY = (
    "install Debian's python3.11 and python3.11-venv (apt-get install python3.11 python3.11-venv)"
)
_LIBPYTHON_REMEDY = "install Debian's libpython3.11 (apt-get install libpython3.11)"
_UV_REMEDY = "install uv (https://docs.astral.sh/uv/; e.g. `pip install uv`) or set $UV"


@dataclass(frozen=True, slots=True)
class TritonVenvSettings:
    """Where and from what the venv is made. `uv` None: $UV, then PATH."""

    cache_root: Path
    python: Path = DEBIAN_PYTHON
    libpython: Path = DEBIAN_LIBPYTHON
    pins: tuple[str, ...] = TRITON_PINS
    uv: Path | None = None
    install_timeout_s: float = _INSTALL_TIMEOUT_S


def default_cache_root() -> Path:
    """$LLORCH_ENGINE_CACHE, else `~/.cache/llorch/engines`."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured) if configured else Path.home() / ".cache" / "llorch" / "engines"


def venv_digest(python: Path, pins: Sequence[str]) -> str:
    """Hex sha256 naming a venv by its interpreter and its pin list (order-insensitive)."""
    canonical = json.dumps([str(python), sorted(pins)], separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def triton_engine_argv(
    prepared: PreparedEngine,
    *,
    model: Path,
    http_port: int,
    grpc_port: int,
    metrics_port: int,
    ctx: int = 4096,
    threads: int = 0,
    model_name: str = "llm",
) -> list[str]:
    """The full argv that starts the Triton engine on `model` (ports on 127.0.0.1)."""
    flags = {
        "--model": str(model),
        "--http-port": str(http_port),
        "--grpc-port": str(grpc_port),
        "--metrics-port": str(metrics_port),
        "--ctx": str(ctx),
        "--threads": str(threads),
        "--model-name": model_name,
    }
    return [*prepared.command, *(part for pair in flags.items() for part in pair)]


def prepare_triton_engine(settings: TritonVenvSettings | None = None) -> PreparedEngine:
    """The prepared Triton engine: found in the cache, or made now (minutes when cold)."""
    settings = settings or TritonVenvSettings(default_cache_root())
    digest = venv_digest(settings.python, settings.pins)
    venv = settings.cache_root / f"triton-{digest[:16]}"
    found = _read_marker(venv, digest)
    if found is not None:
        _log.info("triton venv found", extra={"action": "engine-venv-found", "target": str(venv)})
        return found
    uv = _check_tools(settings)
    settings.cache_root.mkdir(parents=True, exist_ok=True)
    with _locked(settings.cache_root / f"triton-{digest[:16]}.lock"):
        found = _read_marker(venv, digest)  # another process may have made it meanwhile
        if found is not None:
            return found
        return _make(venv, digest, uv, settings)


def _check_tools(settings: TritonVenvSettings) -> Path:
    if not os.access(settings.python, os.X_OK):
        raise EngineToolMissing(str(settings.python), _PYTHON_REMEDY)
    if not settings.libpython.exists():
        raise EngineToolMissing(str(settings.libpython), _LIBPYTHON_REMEDY)
    uv = settings.uv or _which_uv()
    if uv is None or not os.access(uv, os.X_OK):
        raise EngineToolMissing("uv", _UV_REMEDY)
    return uv


def _which_uv() -> Path | None:
    found = os.environ.get("UV") or shutil.which("uv")
    return Path(found) if found else None


def _make(venv: Path, digest: str, uv: Path, settings: TritonVenvSettings) -> PreparedEngine:
    started = time.monotonic()
    if venv.exists():
        _log.info(
            "removing incomplete venv", extra={"action": "engine-venv-clean", "target": str(venv)}
        )
        shutil.rmtree(venv)
    _log.info(
        "creating triton venv from %s",
        settings.python,
        extra={"action": "engine-venv-create", "target": str(venv)},
    )
    _run([str(settings.python), "-m", "venv", "--without-pip", str(venv)], venv, 120.0)
    python = venv / "bin" / "python"
    _log.info(
        "installing %s (a cold llama-cpp-python build takes minutes)",
        " ".join(settings.pins),
        extra={"action": "engine-venv-install", "target": str(venv)},
    )
    wheelhouse = settings.cache_root / "wheels"
    for wheel in seed_wheelhouse(wheelhouse, _uv_cache_dir(uv, venv), settings.pins):
        _log.info(
            "reuses %s, built by uv before", wheel.name,
            extra={"action": "reuse-wheel", "target": str(wheel)},
        )  # fmt: skip
    install = [str(uv), "pip", "install", "--python", str(python), "--find-links", str(wheelhouse)]
    _run([*install, *settings.pins], venv, settings.install_timeout_s)
    versions = _probe_versions(python, venv)
    version = " ".join(f"{name}=={versions[name]}" for name in _DISTRIBUTIONS)
    prepared = _prepared(venv, digest, version)
    _write_marker(venv, prepared, settings.pins)
    _log.info(
        "triton venv ready in %.1f s: %s",
        time.monotonic() - started,
        prepared.version,
        extra={"action": "engine-venv-ready", "target": str(venv)},
    )
    return prepared


def _uv_cache_dir(uv: Path, venv: Path) -> Path | None:
    """uv's cache folder (`uv cache dir`); None when uv cannot say."""
    try:
        said = _run([str(uv), "cache", "dir"], venv, 60.0).strip().splitlines()
    except EngineInstallFailed:
        return None
    return Path(said[-1]) if said else None


def _run(argv: list[str], venv: Path, timeout_s: float) -> str:
    env = {**os.environ, "UV_LOCK_TIMEOUT": os.environ.get("UV_LOCK_TIMEOUT", _UV_LOCK_TIMEOUT_S)}
    env.pop("VIRTUAL_ENV", None)  # uv must install into --python, never the caller's venv
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout_s, env=env, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EngineInstallFailed(f"{argv[0]} failed for {venv}: {exc}") from exc
    if done.returncode != 0:
        tail = (done.stdout + done.stderr)[-3000:]
        raise EngineInstallFailed(f"`{' '.join(argv[:3])} ...` exited {done.returncode}: {tail}")
    return done.stdout


def _probe_versions(python: Path, venv: Path) -> dict[str, str]:
    """Import what the engine needs inside the venv and read the installed versions."""
    code = (
        "import json, importlib.metadata as m, numpy, llama_cpp, pytriton.triton;"
        f"print(json.dumps({{d: m.version(d) for d in {list(_DISTRIBUTIONS)!r}}}))"
    )
    output = _run([str(python), "-c", code], venv, 120.0)
    versions: dict[str, str] = json.loads(output.strip().splitlines()[-1])
    return versions


def _read_marker(venv: Path, digest: str) -> PreparedEngine | None:
    try:
        marker = json.loads((venv / _MARKER).read_text())
    except (OSError, ValueError):
        return None
    if marker.get("digest") != digest or not (venv / "bin" / "python").exists():
        return None
    return _prepared(venv, digest, str(marker["version"]))


def _prepared(venv: Path, digest: str, version: str) -> PreparedEngine:
    python = venv / "bin" / "python"
    return PreparedEngine(
        "triton", "package", (str(python), str(ENGINE_SCRIPT)), version, digest, venv
    )


def _write_marker(venv: Path, prepared: PreparedEngine, pins: Sequence[str]) -> None:
    """Written last, atomically: its presence means the venv is complete."""
    body = {"digest": prepared.digest, "version": prepared.version, "pins": list(pins)}
    scratch = venv / f"{_MARKER}.tmp"
    scratch.write_text(json.dumps(body, indent=2))
    scratch.replace(venv / _MARKER)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on `path`, held for the block (blocks while taken)."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
