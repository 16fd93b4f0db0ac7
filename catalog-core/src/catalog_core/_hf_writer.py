"""Tiny Llama models in Hugging Face format with random weights, for tests (CAT-05).

`write_tiny_hf_model(folder)` writes a folder that vLLM and transformers load with no
extra flags: `config.json` (a `LlamaForCausalLM`: by default 2 layers, hidden 128, 4
query heads and 2 KV heads of 32, feed-forward 256, 2048-token trained context, untied
output head), the weights as one `model.safetensors` (written here: an 8-byte header
length, a JSON header padded to 8 bytes, the tensors in name order), a byte-level BPE
tokenizer trained here on built-in text with the `tokenizers` library (specials `<s>`,
`</s>`, `<pad>`), saved as `tokenizer.json` + `tokenizer_config.json` (with a small
Jinja `chat_template`) + `special_tokens_map.json`, and `generation_config.json`.

Same spec gives a byte-identical folder: the weights come from a seeded generator, the
tokenizer trainer is deterministic on one corpus, and every JSON file is written with
sorted keys. About 3.3 MB in f32. As in the GGUF fixture, the output row of `</s>` is
zero while the others are large, so generations practically never end early.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

__all__ = ["HF_CHAT_TEMPLATE", "TinyHfModelSpec", "write_tiny_hf_model"]

HF_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>"
    "{{ message['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
_SPECIALS = ("<s>", "</s>", "<pad>")
_CORPUS = """
The quick brown fox jumps over the lazy dog. A model serves tokens to many clients;
the orchestrator admits each job, places it on a pool, and streams the answer back.
Engines start, load their weights, answer a health probe and warm up before they serve.
When a worker dies before its first token the job is queued again and runs elsewhere.
In the beginning there was the word, and the word was split into bytes and merged
into tokens, one pair at a time, until the vocabulary was full. Hello world! 0123456789
A pool manager provisions engines, starts them in their own process group, probes their
health, and restarts them with back-off when they die. Placement weighs free memory,
queue depth and the model each pool holds. Cancel reaches the engine within a token or
two; the stream ends with a final frame that says why. Every request carries a budget
of tokens, a deadline and a priority; the scheduler orders them fairly between tenants.
"""


@dataclass(frozen=True, slots=True)
class TinyHfModelSpec:
    """Shape of a fixture model. `vocab_size` is the tokenizer trainer's target; the
    folder's vocabulary is what the trainer reaches on the built-in text (at most it)."""

    layers: int = 2
    hidden: int = 128
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 256
    vocab_size: int = 2048
    context_length: int = 2048
    seed: int = 1234
    dtype: str = "float32"  # or "bfloat16"

    def __post_init__(self) -> None:
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype must be float32 or bfloat16, got {self.dtype!r}")
        if self.hidden % self.heads or self.heads % self.kv_heads:
            raise ValueError("hidden must divide by heads, and heads by kv_heads")


def _tokenizer(spec: TinyHfModelSpec) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        min_frequency=1,
        special_tokens=list(_SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lines = [line for line in _CORPUS.splitlines() if line]
    tokenizer.train_from_iterator(lines, trainer=trainer)
    bos = _special_id(tokenizer, "<s>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    return tokenizer


def _special_id(tokenizer: Tokenizer, token: str) -> int:
    found = tokenizer.token_to_id(token)
    if found is None:
        raise RuntimeError(f"the trained tokenizer lacks {token}")
    return found


def _config(spec: TinyHfModelSpec, vocab: int, ids: dict[str, int]) -> dict[str, object]:
    return {
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": ids["<s>"],
        "eos_token_id": ids["</s>"],
        "pad_token_id": ids["<pad>"],
        "head_dim": spec.hidden // spec.heads,
        "hidden_act": "silu",
        "hidden_size": spec.hidden,
        "initializer_range": 0.02,
        "intermediate_size": spec.intermediate,
        "max_position_embeddings": spec.context_length,
        "mlp_bias": False,
        "model_type": "llama",
        "num_attention_heads": spec.heads,
        "num_hidden_layers": spec.layers,
        "num_key_value_heads": spec.kv_heads,
        "pretraining_tp": 1,
        "rms_norm_eps": 1e-06,
        "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"},
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "torch_dtype": spec.dtype,
        "dtype": spec.dtype,
        "use_cache": True,
        "vocab_size": vocab,
    }


def _weights(spec: TinyHfModelSpec, vocab: int, eos_id: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(spec.seed)
    head_dim = spec.hidden // spec.heads
    kv_dims = head_dim * spec.kv_heads

    def matrix(rows: int, cols: int, scale: float) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) * scale).astype(np.float32)

    def ones(size: int) -> np.ndarray:
        return np.ones(size, dtype=np.float32)

    tensors = {"model.embed_tokens.weight": matrix(vocab, spec.hidden, 1.0)}
    scale = 1.0 / np.sqrt(spec.hidden)
    for layer in range(spec.layers):
        prefix = f"model.layers.{layer}."
        tensors[prefix + "input_layernorm.weight"] = ones(spec.hidden)
        tensors[prefix + "self_attn.q_proj.weight"] = matrix(spec.hidden, spec.hidden, scale)
        tensors[prefix + "self_attn.k_proj.weight"] = matrix(kv_dims, spec.hidden, scale)
        tensors[prefix + "self_attn.v_proj.weight"] = matrix(kv_dims, spec.hidden, scale)
        tensors[prefix + "self_attn.o_proj.weight"] = matrix(spec.hidden, spec.hidden, scale)
        tensors[prefix + "post_attention_layernorm.weight"] = ones(spec.hidden)
        tensors[prefix + "mlp.gate_proj.weight"] = matrix(spec.intermediate, spec.hidden, scale)
        tensors[prefix + "mlp.up_proj.weight"] = matrix(spec.intermediate, spec.hidden, scale)
        tensors[prefix + "mlp.down_proj.weight"] = matrix(
            spec.hidden, spec.intermediate, 1.0 / np.sqrt(spec.intermediate)
        )
    tensors["model.norm.weight"] = ones(spec.hidden)
    output = matrix(vocab, spec.hidden, 0.5)
    output[eos_id, :] = 0.0
    tensors["lm_head.weight"] = output
    return tensors


def _tensor_bytes(array: np.ndarray, dtype: str) -> tuple[str, bytes]:
    """(safetensors dtype, little-endian bytes); bf16 is f32 with the low half dropped
    after rounding to nearest even."""
    if dtype == "float32":
        return "F32", array.astype("<f4").tobytes()
    bits = array.astype("<f4").view("<u4").astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("<u2")
    return "BF16", rounded.tobytes()


def write_safetensors(path: Path, tensors: dict[str, np.ndarray], dtype: str) -> None:
    """Write `tensors` as one safetensors file, in name order, with `format: pt`."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    blobs: list[bytes] = []
    offset = 0
    for name in sorted(tensors):
        code, blob = _tensor_bytes(tensors[name], dtype)
        header[name] = {
            "dtype": code,
            "shape": list(tensors[name].shape),
            "data_offsets": [offset, offset + len(blob)],
        }
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    text += b" " * (-len(text) % 8)
    with path.open("wb") as handle:
        handle.write(struct.pack("<Q", len(text)))
        handle.write(text)
        for blob in blobs:
            handle.write(blob)


def _write_json(path: Path, value: object) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_tiny_hf_model(folder: Path, spec: TinyHfModelSpec | None = None) -> Path:
    """Write a fixture model folder (created if missing) and return it. Blocking I/O."""
    spec = spec or TinyHfModelSpec()
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer(spec)
    vocab = tokenizer.get_vocab_size()
    ids = {token: _special_id(tokenizer, token) for token in _SPECIALS}
    tokenizer.save(str(folder / "tokenizer.json"), pretty=False)
    _write_json(folder / "config.json", _config(spec, vocab, ids))
    _write_json(
        folder / "generation_config.json",
        {"bos_token_id": ids["<s>"], "eos_token_id": ids["</s>"], "pad_token_id": ids["<pad>"]},
    )
    specials = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}
    _write_json(folder / "special_tokens_map.json", specials)
    _write_json(
        folder / "tokenizer_config.json",
        {
            **specials,
            "tokenizer_class": "PreTrainedTokenizerFast",
            "chat_template": HF_CHAT_TEMPLATE,
            "model_max_length": spec.context_length,
            "add_bos_token": True,
            "clean_up_tokenization_spaces": False,
        },
    )
    write_safetensors(folder / "model.safetensors", _weights(spec, vocab, ids["</s>"]), spec.dtype)
    return folder
