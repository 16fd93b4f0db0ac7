"""`llorch catalog ls|show|verify|retire|rm`: the local model and engine catalog (CLI-02).

Human tables by default, `--json` for scripts (CLI-05). The catalog is
`<state dir>/catalog.sqlite` (the state dir is `$LLORCH_STATE_DIR`, else
`~/.local/share/llorch`) unless `--catalog` names another file. `verify` re-hashes a
model's file and records the time when it matches; `retire` keeps the entry but marks it
Retired; `rm` deletes the entry, and with `--purge` also the model file when it lies
inside the state dir's `models/` (an operator's own `file:` model is never deleted).
Exit codes: 0 success; 1 the operation failed (unknown id, digest mismatch, store error);
2 usage error.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from catalog_core import (
    CatalogError,
    CatalogStore,
    DigestMismatch,
    EngineEntry,
    ModelEntry,
    model_digest,
    verify_sha256,
)

from llorch.progress import human_bytes
from llorch.state import default_state_dir

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "add_location_options",
    "add_parser",
    "open_store",
    "state_dir",
]

EXIT_OK, EXIT_FAILED = 0, 1


def add_location_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state-dir", type=Path, default=None, help="default: $LLORCH_STATE_DIR")
    parser.add_argument(
        "--catalog", type=Path, help="catalog file (default: STATE_DIR/catalog.sqlite)"
    )


def state_dir(args: argparse.Namespace) -> Path:
    chosen: Path = args.state_dir or default_state_dir()
    return chosen.expanduser().absolute()


def open_store(args: argparse.Namespace) -> CatalogStore:
    """The catalog named by `--catalog`, else the state dir's; created when missing."""
    path: Path = args.catalog or state_dir(args) / "catalog.sqlite"
    path.parent.mkdir(parents=True, exist_ok=True)
    return CatalogStore(path.expanduser())


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("catalog", help="list and manage the local model catalog")
    actions = parser.add_subparsers(dest="catalog_action", required=True)
    common = argparse.ArgumentParser(add_help=False)
    add_location_options(common)
    common.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing = actions.add_parser("ls", parents=[common], help="list models (or --engines)")
    listing.add_argument("--engines", action="store_true", help="list engines instead")
    listing.set_defaults(handler=_guarded(_ls))
    for name, handler, help_text in (
        ("show", _show, "show one model or engine"),
        ("verify", _verify, "re-hash a model's file (or folder) against its digest"),
        ("retire", _retire, "mark a model Retired"),
        ("rm", _rm, "remove a model or engine entry"),
    ):
        action = actions.add_parser(name, parents=[common], help=help_text)
        action.add_argument("id")
        action.set_defaults(handler=_guarded(handler))
        if name == "rm":
            action.add_argument("--purge", action="store_true", help="also delete its file")


def _guarded(handler: Callable[[argparse.Namespace, CatalogStore], int]) -> Callable[..., int]:
    def run(args: argparse.Namespace) -> int:
        try:
            with open_store(args) as store:
                return handler(args, store)
        except CatalogError as exc:
            print(f"llorch: {exc}", file=sys.stderr)
            return EXIT_FAILED

    return run


def _ls(args: argparse.Namespace, store: CatalogStore) -> int:
    if args.engines:
        engines = list(_all_engines(store))
        _emit(args, [_as_json(e) for e in engines], _engine_table(engines))
    else:
        models = list(_all_models(store))
        _emit(args, [_as_json(m) for m in models], _model_table(models))
    return EXIT_OK


def _show(args: argparse.Namespace, store: CatalogStore) -> int:
    entry = _find(store, args.id)
    fields = {"kind": "model" if isinstance(entry, ModelEntry) else "engine", **_as_json(entry)}
    lines = [f"{name:<16} {_plain(value)}" for name, value in fields.items()]
    _emit(args, fields, "\n".join(lines))
    return EXIT_OK


def _verify(args: argparse.Namespace, store: CatalogStore) -> int:
    model = store.get_model(args.id)
    try:
        _verify_digest(Path(model.local_path), model.sha256)
    except DigestMismatch as exc:
        report = {"id": model.id, "ok": False, "expected": exc.expected, "actual": exc.actual}
        _emit(args, report, f"MISMATCH {model.id}: {exc}")
        return EXIT_FAILED
    store.mark_verified(model.id, time.time_ns() // 1_000_000)
    report = {"id": model.id, "ok": True, "expected": model.sha256, "actual": model.sha256}
    _emit(args, report, f"ok {model.id}: sha256 {model.sha256}")
    return EXIT_OK


def _verify_digest(path: Path, expected: str) -> None:
    """DigestMismatch when a model file (or a Hugging Face model folder: its folder
    digest) no longer has the catalog's digest."""
    if not path.is_dir():
        verify_sha256(path, expected)
        return
    actual = model_digest(path)
    if actual != expected.lower():
        raise DigestMismatch(str(path), expected.lower(), actual)


def _retire(args: argparse.Namespace, store: CatalogStore) -> int:
    model = store.set_lifecycle(args.id, "Retired")
    _emit(args, _as_json(model), f"retired {model.id}")
    return EXIT_OK


def _rm(args: argparse.Namespace, store: CatalogStore) -> int:
    entry = _find(store, args.id)
    if isinstance(entry, EngineEntry):
        store.remove_engine(entry.id)
        _emit(args, {"removed": entry.id, "purged": None}, f"removed engine {entry.id}")
        return EXIT_OK
    store.remove_model(entry.id)
    purged = _purge(Path(entry.local_path), state_dir(args) / "models") if args.purge else None
    note = f" and deleted {purged}" if purged else ""
    _emit(args, {"removed": entry.id, "purged": purged}, f"removed model {entry.id}{note}")
    return EXIT_OK


def _purge(path: Path, managed: Path) -> str | None:
    """Delete a model file only when it lies inside the managed models folder."""
    real, root = path.resolve(), managed.resolve()
    if not real.is_relative_to(root) or not real.is_file():
        return None
    real.unlink()
    return str(real)


def _find(store: CatalogStore, entry_id: str) -> ModelEntry | EngineEntry:
    model = store.find_model(entry_id)
    return model if model is not None else store.get_engine(entry_id)


def _all_models(store: CatalogStore) -> Iterator[ModelEntry]:
    cursor: str | None = None
    while True:
        page = store.list_models(after=cursor, limit=500)
        yield from page.items
        if (cursor := page.next_cursor) is None:
            return


def _all_engines(store: CatalogStore) -> Iterator[EngineEntry]:
    cursor: str | None = None
    while True:
        page = store.list_engines(after=cursor, limit=500)
        yield from page.items
        if (cursor := page.next_cursor) is None:
            return


def _model_table(models: Sequence[ModelEntry]) -> str:
    header = ("ID", "STATE", "SIZE", "ARCH", "QUANT", "CTX", "REF")
    rows = [
        (m.id, m.lifecycle, human_bytes(m.size), m.architecture, m.quantization,
         str(m.trained_context), m.ref)
        for m in models
    ]  # fmt: skip
    return table(header, rows) if rows else "no models in the catalog"


def _engine_table(engines: Sequence[EngineEntry]) -> str:
    header = ("ID", "ENGINE", "VERSION", "MODE", "ARTIFACT")
    rows = [(e.id, e.engine, e.version, e.mode, e.artifact) for e in engines]
    return table(header, rows) if rows else "no engines in the catalog"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart; the last column is not padded."""
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header) - 1)]
    lines = []
    for row in (header, *rows):
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]))
    return "\n".join(lines)


def _as_json(entry: ModelEntry | EngineEntry) -> dict[str, Any]:
    fields = dataclasses.asdict(entry)
    if "flags" in fields:
        fields["flags"] = list(fields["flags"])
    return fields


def _plain(value: object) -> str:
    if isinstance(value, list | tuple):
        return " ".join(str(item) for item in value) or "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
    return str(value) if value != "" else "-"


def _emit(args: argparse.Namespace, data: object, human: str) -> None:
    print(json.dumps(data, indent=2) if args.json else human)
