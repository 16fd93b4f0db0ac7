"""Hugging Face model folders: the tiny-model writer, inspection, digest, estimate, store."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from catalog_core import (
    CatalogStore,
    GgufInfo,
    HfModelInfo,
    ModelFileError,
    TinyHfModelSpec,
    estimate_hf_memory,
    inspect_hf_folder,
    inspect_model,
    model_digest,
    model_entry,
    sha256_folder,
    write_tiny_hf_model,
    write_tiny_model,
)
from catalog_core._hf_writer import write_safetensors
from catalog_core.hf_folder import read_safetensors_header

LLAMA_TENSORS = {
    "model.embed_tokens.weight",
    "model.norm.weight",
    "lm_head.weight",
    *(
        f"model.layers.{layer}.{name}.weight"
        for layer in range(2)
        for name in (
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.o_proj",
            "mlp.gate_proj",
            "mlp.up_proj",
            "mlp.down_proj",
            "input_layernorm",
            "post_attention_layernorm",
        )
    ),
}


def _parameters(spec: TinyHfModelSpec, vocab: int) -> int:
    h, kv = spec.hidden, spec.hidden // spec.heads * spec.kv_heads
    per_layer = 2 * h * h + 2 * kv * h + 3 * h * spec.intermediate + 2 * h
    return 2 * vocab * h + spec.layers * per_layer + h


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_hf_model(tmp_path_factory.mktemp("hf") / "tiny")


def test_same_seed_writes_a_byte_identical_folder(tmp_path: Path, tiny: Path) -> None:
    again = write_tiny_hf_model(tmp_path / "again")
    assert sha256_folder(again) == sha256_folder(tiny)
    for path in tiny.iterdir():
        assert (again / path.name).read_bytes() == path.read_bytes(), path.name


def test_another_seed_writes_other_weights_and_another_digest(tmp_path: Path, tiny: Path) -> None:
    other = write_tiny_hf_model(tmp_path / "other", TinyHfModelSpec(seed=99))
    assert (other / "tokenizer.json").read_bytes() == (tiny / "tokenizer.json").read_bytes()
    assert (other / "model.safetensors").read_bytes() != (tiny / "model.safetensors").read_bytes()
    assert sha256_folder(other) != sha256_folder(tiny)


def test_writer_uses_llama_tensor_names_and_shapes(tiny: Path) -> None:
    tensors = {t.name: t for t in read_safetensors_header(tiny / "model.safetensors")}
    assert set(tensors) == LLAMA_TENSORS
    config = json.loads((tiny / "config.json").read_text())
    assert tensors["model.embed_tokens.weight"].shape == (config["vocab_size"], 128)
    assert tensors["model.layers.0.self_attn.k_proj.weight"].shape == (64, 128)
    assert tensors["model.layers.1.mlp.down_proj.weight"].shape == (128, 256)
    assert {t.dtype for t in tensors.values()} == {"F32"}
    header_length = struct.unpack("<Q", (tiny / "model.safetensors").read_bytes()[:8])[0]
    assert header_length % 8 == 0


def test_writer_saves_tokenizer_with_specials_and_chat_template(tiny: Path) -> None:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tiny / "tokenizer.json"))
    config = json.loads((tiny / "config.json").read_text())
    assert tokenizer.get_vocab_size() == config["vocab_size"] <= 2048
    assert [tokenizer.token_to_id(t) for t in ("<s>", "</s>", "<pad>")] == [
        config["bos_token_id"],
        config["eos_token_id"],
        config["pad_token_id"],
    ]
    encoded = tokenizer.encode("Hello world")
    assert encoded.ids[0] == config["bos_token_id"]
    assert tokenizer.decode(encoded.ids) == "Hello world"
    tokenizer_config = json.loads((tiny / "tokenizer_config.json").read_text())
    assert "add_generation_prompt" in tokenizer_config["chat_template"]
    assert json.loads((tiny / "special_tokens_map.json").read_text())["eos_token"] == "</s>"
    assert (
        json.loads((tiny / "generation_config.json").read_text())["eos_token_id"]
        == (config["eos_token_id"])
    )


def test_inspect_reads_shape_context_parameters_and_dtype(tiny: Path) -> None:
    info = inspect_hf_folder(tiny)
    vocab = json.loads((tiny / "config.json").read_text())["vocab_size"]
    spec = TinyHfModelSpec()
    assert info.architecture == "LlamaForCausalLM"
    assert info.model_type == "llama"
    assert info.context_length == 2048
    assert (info.block_count, info.embedding_length) == (2, 128)
    assert (info.head_count, info.head_count_kv, info.key_length) == (4, 2, 32)
    assert info.feed_forward_length == 256
    assert info.vocab_size == vocab
    assert info.parameter_count == _parameters(spec, vocab)
    assert info.file_type == "F32"
    assert info.weight_bytes == 4 * info.parameter_count
    assert info.output_bytes == info.embedding_bytes == 4 * vocab * 128
    assert info.has_chat_template
    assert info.weight_files == ("model.safetensors",)
    assert info.file_bytes == sum(p.stat().st_size for p in tiny.iterdir())


def test_bf16_folder_halves_the_weight_bytes(tmp_path: Path, tiny: Path) -> None:
    folder = write_tiny_hf_model(tmp_path / "bf16", TinyHfModelSpec(dtype="bfloat16"))
    info = inspect_hf_folder(folder)
    assert info.file_type == "BF16"
    assert info.parameter_count == inspect_hf_folder(tiny).parameter_count
    assert info.weight_bytes == 2 * info.parameter_count


def test_bf16_weights_round_f32_to_nearest(tmp_path: Path) -> None:
    values = np.array([1.0, -2.5, 1.00390625, 3.0e-3], dtype=np.float32)
    write_safetensors(tmp_path / "x.safetensors", {"w": values}, "bfloat16")
    raw = (tmp_path / "x.safetensors").read_bytes()
    header_length = struct.unpack("<Q", raw[:8])[0]
    halves = np.frombuffer(raw[8 + header_length :], dtype="<u2").astype(np.uint32) << 16
    restored = halves.view(np.float32)
    assert restored[:3].tolist() == [1.0, -2.5, 1.0]  # 1 + 2^-8 is a tie: rounds to even
    assert abs(restored[3] - 3.0e-3) < 3.0e-3 / 128


def test_folder_digest_ignores_location_but_not_names_or_bytes(tmp_path: Path, tiny: Path) -> None:
    copy = tmp_path / "elsewhere" / "copy"
    shutil.copytree(tiny, copy)
    (copy / ".cache").mkdir()
    (copy / ".cache" / "download.lock").write_text("hub bookkeeping")
    assert sha256_folder(copy) == sha256_folder(tiny)
    (copy / "generation_config.json").rename(copy / "generation.json")
    renamed = sha256_folder(copy)
    assert renamed != sha256_folder(tiny)
    (copy / "generation.json").write_text("{}")
    assert sha256_folder(copy) != renamed


def test_sharded_folder_reads_every_shard_of_the_index(tmp_path: Path, tiny: Path) -> None:
    folder = tmp_path / "sharded"
    shutil.copytree(tiny, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    first = {"a.weight": np.ones((4, 8), dtype=np.float32)}
    second = {"b.weight": np.ones((16,), dtype=np.float32), "c.weight": np.ones(2, np.float32)}
    write_safetensors(folder / "model-00001-of-00002.safetensors", first, "float32")
    write_safetensors(folder / "model-00002-of-00002.safetensors", second, "float32")
    (folder / "stray.safetensors").write_bytes(b"not listed by the index, so not read")
    weight_map = {
        "a.weight": "model-00001-of-00002.safetensors",
        "b.weight": "model-00002-of-00002.safetensors",
        "c.weight": "model-00002-of-00002.safetensors",
    }
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    info = inspect_hf_folder(folder)
    assert info.weight_files == tuple(sorted(set(weight_map.values())))
    assert info.parameter_count == 32 + 16 + 2
    assert info.weight_bytes == 4 * 50


@pytest.fixture
def broken(tmp_path: Path, tiny: Path) -> Path:
    folder = tmp_path / "broken"
    shutil.copytree(tiny, folder)
    return folder


def _header(folder: Path, header: bytes, *, declared: int | None = None) -> None:
    length = len(header) if declared is None else declared
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", length) + header)


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda f: (f / "config.json").unlink(), "has no config.json"),
        (lambda f: (f / "config.json").write_text("[1, 2]"), "not a JSON object"),
        (lambda f: (f / "config.json").write_text("{"), "is not JSON"),
        (lambda f: (f / "config.json").write_text("{}"), "names no architectures"),
        (lambda f: (f / "model.safetensors").unlink(), "holds no *.safetensors weights"),
        (lambda f: (f / "model.safetensors").write_bytes(b"\x01\x02"), "too short"),
        (lambda f: _header(f, b"{}", declared=1 << 40), "exceeds the file"),
        (lambda f: _header(f, b"not json"), "header is not JSON"),
        (lambda f: _header(f, b'{"w": {"dtype": "Q4", "shape": [1]}}'), "unknown dtype"),
        (
            lambda f: _header(f, b'{"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}'),
            "offsets outside the file",
        ),
        (
            lambda f: _header(f, b'{"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 0]}}'),
            "0 bytes for its shape",
        ),
        (lambda f: _header(f, b'{"__metadata__": {}}'), "without tensors"),
        (
            lambda f: (f / "model.safetensors.index.json").write_text(
                '{"weight_map": {"x": "missing.safetensors"}}'
            ),
            "'missing.safetensors', which is not in the folder",
        ),
    ],
    ids=[
        "no-config",
        "config-not-object",
        "config-not-json",
        "no-architectures",
        "no-weights",
        "short-file",
        "header-length-beyond-file",
        "header-not-json",
        "unknown-dtype",
        "offsets-outside",
        "bytes-disagree-with-shape",
        "no-tensors",
        "index-names-missing-shard",
    ],
)
def test_broken_folder_raises_model_file_error_saying_what(
    broken: Path, breakage: object, message: str
) -> None:
    breakage(broken)  # type: ignore[operator]
    with pytest.raises(ModelFileError, match=message.replace("*", r"\*").replace("(", r"\(")):
        inspect_hf_folder(broken)


def test_a_file_is_not_a_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="is not a folder"):
        inspect_hf_folder(write_tiny_model(tmp_path / "tiny.gguf"))
    with pytest.raises(ModelFileError, match="is not a folder"):
        sha256_folder(tmp_path / "missing")


def test_estimate_counts_weights_in_load_dtype_and_kv_per_token(tiny: Path) -> None:
    info = inspect_hf_folder(tiny)
    # 2 layers x 2 KV heads x (32 + 32) x 4 bytes
    assert info.kv_bytes_per_token == 1024
    estimate = estimate_hf_memory(info, kv_cache_tokens=1000)
    assert estimate.weights == info.weight_bytes
    assert estimate.kv_cache == 1024 * 1000
    assert estimate.compute_buffer == 512 * info.vocab_size * 4
    assert estimate.total == estimate.weights + estimate.kv_cache + estimate.compute_buffer
    halved = estimate_hf_memory(info, kv_cache_tokens=1000, load_dtype="bf16")
    assert (halved.weights, halved.kv_cache) == (info.parameter_count * 2, 512 * 1000)
    with pytest.raises(ValueError, match="negative"):
        estimate_hf_memory(info, kv_cache_tokens=-1)


def test_inspect_model_and_digest_take_either_format(tmp_path: Path, tiny: Path) -> None:
    gguf = write_tiny_model(tmp_path / "tiny.gguf")
    assert isinstance(inspect_model(gguf), GgufInfo)
    assert isinstance(inspect_model(tiny), HfModelInfo)
    assert model_digest(tiny) == sha256_folder(tiny)
    assert len(model_digest(gguf)) == 64


def test_folder_entry_is_registered_listed_and_shown(tmp_path: Path, tiny: Path) -> None:
    info = inspect_hf_folder(tiny)
    digest = sha256_folder(tiny)
    entry = model_entry("tiny-hf", f"file:{tiny}", tiny, info, digest, verified_at_ms=7)
    gguf = write_tiny_model(tmp_path / "tiny.gguf")
    gguf_entry = model_entry(
        "tiny-gguf", f"file:{gguf}", gguf, inspect_model(gguf), model_digest(gguf), verified_at_ms=7
    )
    with CatalogStore(tmp_path / "catalog.sqlite") as store:
        store.put_models([entry, gguf_entry])
        shown = store.get_model("tiny-hf")
        listed = store.list_models().items
        by_digest = store.models_by_sha256(digest)
    assert shown == entry
    assert [e.id for e in listed] == ["tiny-gguf", "tiny-hf"]
    assert by_digest == (entry,)
    assert (shown.format, shown.quantization, shown.architecture) == (
        "safetensors",
        "F32",
        "LlamaForCausalLM",
    )
    assert (shown.trained_context, shown.layers, shown.kv_heads, shown.head_size) == (
        2048,
        2,
        2,
        32,
    )
    assert shown.parameter_count == info.parameter_count and shown.chat_template
    assert shown.size == info.file_bytes
    assert listed[0].format == "gguf"
