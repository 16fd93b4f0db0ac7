"""Pure policy packages import no I/O modules and read no clock (STYLE rule 1)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

FORBIDDEN = {
    "asyncio",
    "socket",
    "subprocess",
    "os",
    "sys",
    "time",
    "datetime",
    "random",
    "secrets",
    "threading",
    "multiprocessing",
    "sqlite3",
    "pathlib",
    "shutil",
    "tempfile",
    "io",
    "signal",
    "select",
    "selectors",
    "ssl",
    "urllib",
    "http",
    "logging",
    "grpc",
    "httpx",
    "aiohttp",
    "requests",
    "starlette",
    "uvicorn",
    "llama_cpp",
    "gguf",
    "psutil",
    "pynvml",
}
PURE_PACKAGES = [
    "orchestratord.admission",
    "orchestratord.placement",
    "pool_managerd.lifecycle",
    "worker_adapters.capabilities",
]


def _sources(package: str) -> list[Path]:
    module = importlib.import_module(package)
    origin = Path(module.__file__ or "")
    return sorted(origin.parent.glob("*.py")) if origin.name == "__init__.py" else [origin]


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", PURE_PACKAGES)
def test_pure_package_imports_no_io_module(package: str) -> None:
    sources = _sources(package)
    assert sources, f"no sources found for {package}"
    for source in sources:
        bad = _imports(source) & FORBIDDEN
        assert not bad, f"{source} imports {sorted(bad)}"


def test_the_purity_check_notices_a_forbidden_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import time\nfrom socket import socket\nfrom . import sibling\n")
    assert _imports(sample) & FORBIDDEN == {"time", "socket"}
