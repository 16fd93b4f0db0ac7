"""The SQLite catalog store (CAT-01..03): schema, migrations, lookups, transactions."""

from __future__ import annotations

import hashlib
import sqlite3
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from catalog_core import (
    SCHEMA_VERSION,
    CatalogStore,
    DuplicateEntry,
    EngineEntry,
    EntryNotFound,
    ModelEntry,
    SchemaTooNew,
    StoreBusy,
    StoreCorrupt,
    engine_build_key,
)
from catalog_core.migrations import MIGRATIONS
from hypothesis import given, settings
from hypothesis import strategies as st


def _model(model_id: str, **changes: object) -> ModelEntry:
    entry = ModelEntry(
        id=model_id,
        ref=f"file:/models/{model_id}.gguf",
        local_path=f"/models/{model_id}.gguf",
        sha256=hashlib.sha256(model_id.encode()).hexdigest(),
        size=1234,
        architecture="llama",
        parameter_count=42_000,
        quantization="F32",
        trained_context=4096,
        layers=2,
        heads=4,
        kv_heads=2,
        head_size=16,
        chat_template=True,
        verified_at_ms=1_700_000_000_000,
    )
    return replace(entry, **changes)  # type: ignore[arg-type]


def _engine(engine_id: str, **changes: object) -> EngineEntry:
    entry = EngineEntry(
        id=engine_id,
        engine="llama.cpp",
        version="b4500",
        mode="source",
        artifact=f"/engines/{engine_id}/llama-server",
        digest="ab" * 32,
        build_ref="v4500",
        flags=("-DGGML_CUDA=ON", "-DLLAMA_CURL=OFF"),
        created_at_ms=1_700_000_000_000,
        extra={"cuda": "12.4"},
        build_key=engine_build_key("llama.cpp", "cd" * 32, ("-DGGML_CUDA=ON",)),
    )
    return replace(entry, **changes)  # type: ignore[arg-type]


def _user_version(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])


def test_an_empty_database_is_migrated_to_the_current_schema_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "catalog.sqlite"
    with CatalogStore(path) as store:
        assert store.schema_version == SCHEMA_VERSION == MIGRATIONS[-1].version
    assert _user_version(path) == SCHEMA_VERSION
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert {"models", "engines", "engines_by_build_key"} <= tables


def test_migrations_are_numbered_in_order_from_one() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))


def test_a_database_at_an_older_version_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "catalog.sqlite"
    with sqlite3.connect(path) as conn:
        for statement in MIGRATIONS[0].statements:
            conn.execute(statement)
        conn.execute(
            "INSERT INTO engines VALUES ('e1', 'llama.cpp', 'b1', 'binary', '/bin/x', '', '',"
            " '[]', 5, '{}')"
        )
        conn.execute("PRAGMA user_version = 1")
    with CatalogStore(path) as store:
        assert store.schema_version == SCHEMA_VERSION
        engine = store.get_engine("e1")
    assert (engine.artifact, engine.build_key, engine.created_at_ms) == ("/bin/x", "", 5)


def test_a_database_with_a_newer_schema_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "catalog.sqlite"
    newer = SCHEMA_VERSION + 1
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {newer}")
    with pytest.raises(SchemaTooNew) as caught:
        CatalogStore(path)
    assert (caught.value.found, caught.value.supported) == (newer, SCHEMA_VERSION)
    assert f"schema version {newer}" in str(caught.value) and "upgrade llorch" in str(caught.value)
    assert not caught.value.retryable
    assert _user_version(path) == newer


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "catalog.sqlite"
    path.write_bytes(b"definitely not sqlite" * 100)
    with pytest.raises(StoreCorrupt, match="not a readable catalog"):
        CatalogStore(path)


def test_a_model_is_found_by_id_ref_and_sha256(tmp_path: Path) -> None:
    entry = _model("tiny")
    twin = _model("twin", ref="https://example.org/tiny.gguf", sha256=entry.sha256)
    with CatalogStore(tmp_path / "c.sqlite") as store:
        store.put_models([entry, twin, _model("other")])
        assert store.get_model("tiny") == entry
        assert store.model_by_ref(entry.ref) == entry
        assert store.models_by_sha256(entry.sha256.upper()) == (entry, twin)
        assert store.find_model("missing") is None and store.model_by_ref("file:/x") is None
    with CatalogStore(tmp_path / "c.sqlite") as reopened:
        assert reopened.get_model("tiny") == entry


def test_an_engine_is_found_by_id_version_and_build_key(tmp_path: Path) -> None:
    built = _engine("llama-cuda")
    other = _engine("llama-cpu", flags=(), build_key="", mode="binary")
    with CatalogStore(tmp_path / "c.sqlite") as store:
        store.put_engine(built)
        store.put_engine(other)
        assert store.get_engine("llama-cuda") == built
        assert store.engines_by_version("llama.cpp", "b4500") == (other, built)
        assert store.engine_by_build_key(built.build_key) == built
        assert store.engine_by_build_key("") is None
        assert [e.id for e in store.list_engines().items] == ["llama-cpu", "llama-cuda"]
        assert store.remove_engine("llama-cpu") == other
        with pytest.raises(EntryNotFound):
            store.get_engine("llama-cpu")


def test_a_build_key_names_one_engine(tmp_path: Path) -> None:
    with CatalogStore(tmp_path / "c.sqlite") as store:
        store.put_engine(_engine("first"))
        with pytest.raises(DuplicateEntry):
            store.put_engine(_engine("second"))
        assert store.find_engine("second") is None


def test_the_build_key_depends_on_engine_source_and_flags_in_order() -> None:
    key = engine_build_key("llama.cpp", "aa", ("-DA=1", "-DB=1"))
    assert key == engine_build_key("llama.cpp", "aa", ["-DA=1", "-DB=1"])
    assert (
        len(
            {
                key,
                engine_build_key("llama.cpp", "ab", ("-DA=1", "-DB=1")),
                engine_build_key("vllm", "aa", ("-DA=1", "-DB=1")),
                engine_build_key("llama.cpp", "aa", ("-DB=1", "-DA=1")),
                engine_build_key("llama.cpp", "aa", ("-DA=1-DB=1",)),
            }
        )
        == 5
    )


def test_lifecycle_and_verification_time_are_updated(tmp_path: Path) -> None:
    with CatalogStore(tmp_path / "c.sqlite") as store:
        store.put_model(_model("tiny"))
        assert store.set_lifecycle("tiny", "Retired").lifecycle == "Retired"
        assert [m.id for m in store.list_models(lifecycle="Active").items] == []
        assert [m.id for m in store.list_models(lifecycle="Retired").items] == ["tiny"]
        assert store.mark_verified("tiny", 99).verified_at_ms == 99
        assert store.remove_model("tiny").lifecycle == "Retired"
        operations: list[Callable[[], ModelEntry]] = [
            lambda: store.set_lifecycle("tiny", "Active"),
            lambda: store.mark_verified("tiny", 1),
            lambda: store.remove_model("tiny"),
            lambda: store.get_model("tiny"),
        ]
        for operation in operations:
            with pytest.raises(EntryNotFound, match="no model with id 'tiny'"):
                operation()


def test_putting_a_model_replaces_the_entry_for_its_ref(tmp_path: Path) -> None:
    with CatalogStore(tmp_path / "c.sqlite") as store:
        store.put_model(_model("tiny"))
        renamed = _model("tiny-v2", ref=_model("tiny").ref, size=99)
        store.put_model(renamed)
        assert store.list_models().items == (renamed,)
        store.put_model(replace(renamed, size=100))
        assert store.get_model("tiny-v2").size == 100


def test_an_id_taken_by_another_ref_is_refused(tmp_path: Path) -> None:
    with CatalogStore(tmp_path / "c.sqlite") as store:
        store.put_model(_model("tiny"))
        with pytest.raises(DuplicateEntry, match="taken by"):
            store.put_model(_model("tiny", ref="hf:org/repo/tiny.gguf"))


def test_a_failed_write_stores_nothing_of_its_transaction(tmp_path: Path) -> None:
    with CatalogStore(tmp_path / "c.sqlite") as store:
        store.put_model(_model("taken"))
        with pytest.raises(DuplicateEntry):
            store.put_models([_model("fresh"), _model("taken", ref="file:/elsewhere.gguf")])
        assert [m.id for m in store.list_models().items] == ["taken"]


def test_a_writer_blocked_past_the_busy_timeout_gets_a_retryable_error(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    CatalogStore(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with CatalogStore(path, busy_timeout_s=0.05) as store:
            with pytest.raises(StoreBusy) as caught:
                store.put_model(_model("tiny"))
            assert caught.value.retryable
            assert store.list_models().items == ()  # readers are not blocked by the writer
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_a_listing_limit_out_of_range_is_refused(tmp_path: Path) -> None:
    with CatalogStore(tmp_path / "c.sqlite") as store, pytest.raises(ValueError, match="limit"):
        store.list_models(limit=0)


_IDS = st.sets(st.text(alphabet="abcxyz-0189", min_size=1, max_size=6), max_size=12)


@settings(max_examples=25, deadline=None)
@given(ids=_IDS, limit=st.integers(min_value=1, max_value=5))
def test_pages_list_every_model_once_in_id_order(ids: set[str], limit: int) -> None:
    with tempfile.TemporaryDirectory() as folder, CatalogStore(Path(folder) / "c.sqlite") as store:
        store.put_models([_model(model_id) for model_id in ids])
        seen: list[str] = []
        cursor: str | None = None
        while True:
            page = store.list_models(after=cursor, limit=limit)
            assert len(page.items) <= limit
            seen += [entry.id for entry in page.items]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
    assert seen == sorted(ids)
