"""Conversion between catalog entries and the rows of the store's tables.

Pure: values in, values out. Column names follow the entries' field names, except that
`EngineEntry.flags` and `.extra` are stored as JSON text (`flags_json`, `extra_json`)
and booleans as 0/1. A row that does not convert back (a value of the wrong type, an
unknown lifecycle or mode) raises StoreCorrupt.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import cast, get_args

from catalog_core.entries import EngineEntry, EngineMode, Lifecycle, ModelEntry
from catalog_core.errors import StoreCorrupt

__all__ = [
    "ENGINE_COLUMNS",
    "MODEL_COLUMNS",
    "engine_from_row",
    "engine_to_row",
    "model_from_row",
    "model_to_row",
]

Row = Sequence[object]

MODEL_COLUMNS: tuple[str, ...] = ModelEntry.__match_args__
ENGINE_COLUMNS: tuple[str, ...] = tuple(
    {"flags": "flags_json", "extra": "extra_json"}.get(name, name)
    for name in EngineEntry.__match_args__
)
_LIFECYCLES: tuple[str, ...] = get_args(Lifecycle)
_MODES: tuple[str, ...] = get_args(EngineMode)


def model_to_row(entry: ModelEntry) -> tuple[object, ...]:
    return tuple(
        int(value) if isinstance(value, bool) else value
        for value in (getattr(entry, name) for name in MODEL_COLUMNS)
    )


def model_from_row(row: Row) -> ModelEntry:
    values = dict(zip(MODEL_COLUMNS, row, strict=True))
    if values["lifecycle"] not in _LIFECYCLES:
        raise StoreCorrupt(f"model {values['id']!r} has lifecycle {values['lifecycle']!r}")
    values["chat_template"] = bool(values["chat_template"])
    entry = ModelEntry(**values)  # type: ignore[arg-type]
    _check_types(entry, ("id", "ref", "local_path", "sha256"), ("size", "verified_at_ms"))
    return entry


def engine_to_row(entry: EngineEntry) -> tuple[object, ...]:
    row: list[object] = []
    for name in EngineEntry.__match_args__:
        value = getattr(entry, name)
        if name == "flags":
            value = json.dumps(list(value))
        elif name == "extra":
            value = json.dumps(value, sort_keys=True)
        row.append(value)
    return tuple(row)


def engine_from_row(row: Row) -> EngineEntry:
    values = dict(zip(EngineEntry.__match_args__, row, strict=True))
    if values["mode"] not in _MODES:
        raise StoreCorrupt(f"engine {values['id']!r} has mode {values['mode']!r}")
    try:
        flags = json.loads(cast(str, values["flags"]))
        extra = json.loads(cast(str, values["extra"]))
    except (TypeError, ValueError) as exc:
        raise StoreCorrupt(f"engine {values['id']!r} has unreadable flags or extra") from exc
    values["flags"] = tuple(str(flag) for flag in flags)
    values["extra"] = {str(key): str(value) for key, value in extra.items()}
    entry = EngineEntry(**values)  # type: ignore[arg-type]
    _check_types(entry, ("id", "engine", "version", "artifact"), ("created_at_ms",))
    return entry


def _check_types(entry: object, texts: tuple[str, ...], integers: tuple[str, ...]) -> None:
    for name in texts:
        if not isinstance(getattr(entry, name), str):
            raise StoreCorrupt(f"catalog column {name!r} holds a non-text value")
    for name in integers:
        if not isinstance(getattr(entry, name), int):
            raise StoreCorrupt(f"catalog column {name!r} holds a non-integer value")
