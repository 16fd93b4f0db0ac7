"""Tiny llama-architecture models with random weights, for tests: GGUF files here, and
Hugging Face folders (`write_tiny_hf_model`, `TinyHfModelSpec`, from `_hf_writer`).

`write_tiny_model(path)` writes a model that llama.cpp loads in milliseconds: by default
2 layers × 64 dims, 4 query heads and 2 KV heads, a 512-token byte-level BPE vocabulary
(256 byte tokens, 254 merges learnt from a small built-in corpus, BOS and EOS) and a
chat template, about 0.6 MB in f32. Same arguments give a byte-identical file (the
weights come from a seeded generator), so tests are reproducible.

The output row of EOS is zero while the other rows are large, so EOS is practically
never sampled: generations run to `max_tokens` or a stop string, which makes long
streams (for cancel and back-pressure tests) cheap to produce.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import gguf
import numpy as np

from catalog_core._hf_writer import HF_CHAT_TEMPLATE, TinyHfModelSpec, write_tiny_hf_model

__all__ = [
    "CHAT_TEMPLATE",
    "HF_CHAT_TEMPLATE",
    "TinyHfModelSpec",
    "TinyModelSpec",
    "write_tiny_hf_model",
    "write_tiny_model",
]

CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}<|end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

_CORPUS = """
The quick brown fox jumps over the lazy dog. A model serves tokens to many clients;
the orchestrator admits each job, places it on a pool, and streams the answer back.
Engines start, load their weights, answer a health probe and warm up before they serve.
When a worker dies before its first token the job is queued again and runs elsewhere.
In the beginning there was the word, and the word was split into bytes and merged
into tokens, one pair at a time, until the vocabulary was full. Hello world! 0123456789
"""


@dataclass(frozen=True, slots=True)
class TinyModelSpec:
    """Shape of a fixture model. `vocab_size` counts bytes, merges and two specials."""

    layers: int = 2
    dims: int = 64
    heads: int = 4
    kv_heads: int = 2
    ffn: int = 128
    vocab_size: int = 512
    context_length: int = 4096
    seed: int = 1234
    name: str = "llorch-tiny"
    chat_template: str = CHAT_TEMPLATE  # written as `tokenizer.chat_template`


def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def _learn_merges(count: int) -> list[tuple[str, str]]:
    """Greedy BPE on the built-in corpus; ties broken by the pair's text (deterministic)."""
    to_char = _byte_to_unicode()
    words = [[to_char[b] for b in word.encode()] for word in _CORPUS.replace("\n", " ").split(" ")]
    words = [w for w in words if w]
    merges: list[tuple[str, str]] = []
    for _ in range(count):
        pairs = Counter(pair for w in words for pair in pairwise(w))
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        merged_words = []
        for w in words:
            out: list[str] = []
            i = 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            merged_words.append(out)
        words = merged_words
    # Pad with merges of rarely seen byte pairs so the vocabulary has its declared size.
    pad_chars = [to_char[b] for b in range(ord("a"), ord("z") + 1)]
    existing = {a + b for a, b in merges}
    for a in pad_chars:
        for b in pad_chars:
            if len(merges) >= count:
                return merges
            if a + b not in existing:
                merges.append((a, b))
                existing.add(a + b)
    return merges


def _vocabulary(spec: TinyModelSpec) -> tuple[list[str], list[int], list[str]]:
    to_char = _byte_to_unicode()
    tokens = [to_char[b] for b in range(256)]
    merges = _learn_merges(spec.vocab_size - 256 - 2)
    tokens += [a + b for a, b in merges]
    tokens += ["<|bos|>", "<|eos|>"]
    types = [gguf.TokenType.NORMAL] * (len(tokens) - 2) + [gguf.TokenType.CONTROL] * 2
    return tokens, [int(t) for t in types], [f"{a} {b}" for a, b in merges]


def _weights(spec: TinyModelSpec, eos_id: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(spec.seed)
    head_dim = spec.dims // spec.heads
    kv_dims = head_dim * spec.kv_heads

    def matrix(rows: int, cols: int, scale: float) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) * scale).astype(np.float32)

    tensors: dict[str, np.ndarray] = {
        "token_embd.weight": matrix(spec.vocab_size, spec.dims, 1.0),
        "output_norm.weight": np.ones(spec.dims, dtype=np.float32),
    }
    output = matrix(spec.vocab_size, spec.dims, 0.5)
    output[eos_id, :] = 0.0
    tensors["output.weight"] = output
    scale = 1.0 / np.sqrt(spec.dims)
    for layer in range(spec.layers):
        prefix = f"blk.{layer}."
        tensors[prefix + "attn_norm.weight"] = np.ones(spec.dims, dtype=np.float32)
        tensors[prefix + "attn_q.weight"] = matrix(spec.dims, spec.dims, scale)
        tensors[prefix + "attn_k.weight"] = matrix(kv_dims, spec.dims, scale)
        tensors[prefix + "attn_v.weight"] = matrix(kv_dims, spec.dims, scale)
        tensors[prefix + "attn_output.weight"] = matrix(spec.dims, spec.dims, scale)
        tensors[prefix + "ffn_norm.weight"] = np.ones(spec.dims, dtype=np.float32)
        tensors[prefix + "ffn_gate.weight"] = matrix(spec.ffn, spec.dims, scale)
        tensors[prefix + "ffn_up.weight"] = matrix(spec.ffn, spec.dims, scale)
        tensors[prefix + "ffn_down.weight"] = matrix(spec.dims, spec.ffn, 1.0 / np.sqrt(spec.ffn))
    return tensors


def write_tiny_model(path: Path, spec: TinyModelSpec | None = None) -> Path:
    """Write a fixture GGUF model to `path` and return the path. Blocking file I/O."""
    spec = spec or TinyModelSpec()
    tokens, types, merges = _vocabulary(spec)
    bos_id, eos_id = len(tokens) - 2, len(tokens) - 1
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name(spec.name)
    writer.add_context_length(spec.context_length)
    writer.add_embedding_length(spec.dims)
    writer.add_block_count(spec.layers)
    writer.add_feed_forward_length(spec.ffn)
    writer.add_head_count(spec.heads)
    writer.add_head_count_kv(spec.kv_heads)
    writer.add_rope_dimension_count(spec.dims // spec.heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_vocab_size(spec.vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(bos_id)
    writer.add_eos_token_id(eos_id)
    writer.add_add_bos_token(True)
    writer.add_chat_template(spec.chat_template)
    for name, tensor in _weights(spec, eos_id).items():
        writer.add_tensor(name, tensor)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
