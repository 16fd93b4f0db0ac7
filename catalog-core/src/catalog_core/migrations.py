"""The catalog's schema, as an ordered list of migrations (CAT-01).

Migration N takes a database at schema version N-1 to version N; the store applies the
missing ones in order, each in its own transaction together with `PRAGMA user_version`,
so a crash leaves the database at some whole version. Never edit a released migration:
append a new one. This module holds SQL text only; the store executes it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "Migration"]


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step: `statements` run in order and leave the schema at `version`."""

    version: int
    summary: str
    statements: tuple[str, ...]


_MODELS_AND_ENGINES = Migration(
    version=1,
    summary="models and engines",
    statements=(
        """
        CREATE TABLE models (
            id              TEXT PRIMARY KEY,
            ref             TEXT NOT NULL UNIQUE,
            local_path      TEXT NOT NULL,
            sha256          TEXT NOT NULL,
            size            INTEGER NOT NULL,
            format          TEXT NOT NULL,
            architecture    TEXT NOT NULL,
            parameter_count INTEGER NOT NULL,
            quantization    TEXT NOT NULL,
            trained_context INTEGER NOT NULL,
            layers          INTEGER NOT NULL,
            heads           INTEGER NOT NULL,
            kv_heads        INTEGER NOT NULL,
            head_size       INTEGER NOT NULL,
            chat_template   INTEGER NOT NULL,
            lifecycle       TEXT NOT NULL CHECK (lifecycle IN ('Active', 'Retired')),
            verified_at_ms  INTEGER NOT NULL
        )
        """,
        "CREATE INDEX models_by_sha256 ON models (sha256)",
        """
        CREATE TABLE engines (
            id             TEXT PRIMARY KEY,
            engine         TEXT NOT NULL,
            version        TEXT NOT NULL,
            mode           TEXT NOT NULL
                           CHECK (mode IN ('source', 'package', 'binary', 'container')),
            artifact       TEXT NOT NULL,
            digest         TEXT NOT NULL,
            build_ref      TEXT NOT NULL,
            flags_json     TEXT NOT NULL,
            created_at_ms  INTEGER NOT NULL,
            extra_json     TEXT NOT NULL
        )
        """,
        "CREATE INDEX engines_by_version ON engines (engine, version)",
    ),
)

# Builds are reused by their inputs (PRV-02): a key over engine, source digest and flags.
_ENGINE_BUILD_KEY = Migration(
    version=2,
    summary="engine build keys",
    statements=(
        "ALTER TABLE engines ADD COLUMN build_key TEXT NOT NULL DEFAULT ''",
        "CREATE UNIQUE INDEX engines_by_build_key ON engines (build_key) WHERE build_key != ''",
    ),
)

MIGRATIONS: tuple[Migration, ...] = (_MODELS_AND_ENGINES, _ENGINE_BUILD_KEY)
SCHEMA_VERSION = MIGRATIONS[-1].version
