"""Fixture models and GGUF inspection (CAT-02)."""

from __future__ import annotations

from pathlib import Path

import pytest
from catalog_core import (
    DigestMismatch,
    ModelFileError,
    TinyModelSpec,
    inspect_gguf,
    sha256_file,
    verify_sha256,
    write_tiny_model,
)


def test_the_fixture_writer_is_deterministic(tmp_path: Path) -> None:
    first = write_tiny_model(tmp_path / "a.gguf")
    second = write_tiny_model(tmp_path / "b.gguf")
    assert sha256_file(first) == sha256_file(second)
    other = write_tiny_model(tmp_path / "c.gguf", TinyModelSpec(seed=7))
    assert sha256_file(other) != sha256_file(first)


def test_the_default_fixture_is_small_and_reads_back_its_shape(tmp_path: Path) -> None:
    path = write_tiny_model(tmp_path / "tiny.gguf")
    info = inspect_gguf(path)
    assert path.stat().st_size < 1_000_000
    assert (info.architecture, info.block_count, info.embedding_length) == ("llama", 2, 64)
    assert (info.head_count, info.head_count_kv, info.key_length) == (4, 2, 16)
    assert info.vocab_size == 512 and info.context_length == 4096
    assert info.file_type == "F32" and info.has_chat_template
    assert info.weight_bytes == info.parameter_count * 4


def test_a_custom_shape_is_written(tmp_path: Path) -> None:
    spec = TinyModelSpec(layers=3, dims=128, heads=8, kv_heads=4, context_length=8192)
    info = inspect_gguf(write_tiny_model(tmp_path / "m.gguf", spec))
    assert (info.block_count, info.embedding_length, info.head_count_kv) == (3, 128, 4)
    assert info.context_length == 8192


def test_a_file_that_is_not_gguf_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a model at all" * 10)
    with pytest.raises(ModelFileError, match="not a readable GGUF"):
        inspect_gguf(junk)
    with pytest.raises(ModelFileError):
        inspect_gguf(tmp_path / "missing.gguf")


def test_a_digest_mismatch_names_both_digests(tmp_path: Path) -> None:
    path = write_tiny_model(tmp_path / "tiny.gguf")
    actual = sha256_file(path)
    assert verify_sha256(path, actual.upper()) == actual
    with pytest.raises(DigestMismatch) as caught:
        verify_sha256(path, "0" * 64)
    assert actual in str(caught.value) and "0" * 64 in str(caught.value)
