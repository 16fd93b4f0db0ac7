"""The members' README drawings name only modules that exist.

A drawing (the first fenced block of a member's README) names modules as paths inside a
package (`jobs/intake`, `native/adapter`) or as files (`control_link.py`). Each one must
be a module or package of some member's `src/<package>/`, so a renamed or removed module
cannot leave a drawing that sends a newcomer looking for it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

# Members whose drawing names modules, with the fewest names it must be found to hold
# (so a change to the extraction that silently finds nothing fails here).
DRAWINGS = {
    "orchestratord": 25,
    "worker-adapters": 10,
    "adapter-host": 2,
    "provisioners": 10,
}

_PATH = re.compile(r"(?<![\w./-])([a-z_][a-z0-9_]*(?:/[a-z_][a-z0-9_]*)+)(?:\.py)?(?![\w/-])")
_FILE = re.compile(r"(?<![\w./-])([a-z_][a-z0-9_]*\.py)\b")


def _modules() -> tuple[frozenset[str], frozenset[str]]:
    """Every module and package of every member, as paths relative to its package
    (`jobs/intake`, `jobs`) and from the package's name (`orchestratord/jobs/intake`),
    and the names of the packages and their top folders (`orchestratord`, `jobs`, ...)."""
    modules: set[str] = set()
    folders: set[str] = set()
    for package in ROOT.glob("*/src/*"):
        if not package.is_dir() or package.name.endswith(".egg-info"):
            continue
        for path in package.rglob("*"):
            if "__pycache__" in path.parts:
                continue
            relative = path.relative_to(package)
            if path.is_dir() and (path / "__init__.py").exists():
                found = [relative.as_posix()]
                if len(relative.parts) == 1:
                    folders.add(relative.as_posix())
            elif path.suffix == ".py":
                found = [relative.with_suffix("").as_posix(), relative.as_posix()]
            else:
                continue
            modules.update(found)
            modules.update(f"{package.name}/{name}" for name in found)
        folders.add(package.name)
    return frozenset(modules), frozenset(folders)


def drawing(readme: str) -> str:
    match = re.search(r"^```[^\n]*\n(.*?)^```", readme, re.MULTILINE | re.DOTALL)
    return match.group(1) if match else ""


def named_modules(text: str, folders: frozenset[str]) -> list[str]:
    """The module references of a drawing: package paths whose first part is a package
    folder of some member, and `*.py` file names."""
    names = [m.group(1) for m in _PATH.finditer(text) if m.group(1).split("/")[0] in folders]
    names += [m.group(1) for m in _FILE.finditer(text) if "/" not in m.group(1)]
    return names


def missing(names: list[str], modules: frozenset[str]) -> list[str]:
    known_files = {m.rsplit("/", 1)[-1] for m in modules if m.endswith(".py")}
    gone = []
    for name in names:
        if name.endswith(".py") and "/" not in name:
            if name not in known_files:
                gone.append(name)
        elif not any(m == name or m.endswith("/" + name) for m in modules):
            gone.append(name)
    return gone


@pytest.mark.parametrize("member", sorted(DRAWINGS))
def test_a_readme_drawing_names_only_modules_that_exist(member: str) -> None:
    modules, folders = _modules()
    text = drawing((ROOT / member / "README.md").read_text(encoding="utf-8"))
    names = named_modules(text, folders)
    assert len(set(names)) >= DRAWINGS[member], f"{member}: found only {sorted(set(names))}"
    assert missing(names, modules) == [], f"{member}/README.md names modules that do not exist"


def test_a_drawing_naming_a_removed_module_is_caught() -> None:
    modules, folders = _modules()
    text = (
        "POST ─► jobs/intake ─► jobs/vanished ─► orchestratord/app.py ─► adapter_host/gone"
        " ─► registry.py ─► gone_module.py"
    )
    names = named_modules(text, folders)
    assert names == [
        "jobs/intake",
        "jobs/vanished",
        "orchestratord/app",
        "adapter_host/gone",
        "registry.py",
        "gone_module.py",
    ]
    assert missing(names, modules) == ["jobs/vanished", "adapter_host/gone", "gone_module.py"]
