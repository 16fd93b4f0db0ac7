"""KV equivalence of the in-process engine (TST-04): prefill-then-decode equals one pass.

The in-process engine is llama-cpp-python's `Llama` on the tiny fixture model. The same
tokens are evaluated three ways: all in one batch; a prefill of the first tokens in one
batch, then one token at a time against the KV cache; and one token at a time from the
start. The logits at every position agree within `TOLERANCE` (absolute, on logits that
span about ±15 on this model; measured differences are about 1.3e-3, from the batch's
other summation order), and the most likely token is the same wherever the top two
logits are further apart than the tolerance. A control shows the check can fail: a KV
cache holding one other token gives logits far outside the tolerance.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from catalog_core import write_tiny_model
from llama_cpp import Llama
from numpy.typing import NDArray

TOLERANCE = 1e-2
PREFILL = 6
TEXT = b"The quick brown fox jumps over the lazy dog, then it rests in the sun for a while"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("kv") / "tiny.gguf")


def logits(model: Path, batches: Sequence[Sequence[int]]) -> NDArray[np.float32]:
    """The logits at every position after evaluating `batches` in order, in a fresh context."""
    llama = Llama(str(model), n_ctx=256, logits_all=True, verbose=False, n_threads=1)
    try:
        for batch in batches:
            llama.eval(batch)
        return np.array(llama.scores[: llama.n_tokens], dtype=np.float32)
    finally:
        llama.close()


def tokens_of(model: Path) -> list[int]:
    llama = Llama(str(model), n_ctx=256, verbose=False, vocab_only=True)
    try:
        return list(llama.tokenize(TEXT, add_bos=True))
    finally:
        llama.close()


def agree(a: NDArray[np.float32], b: NDArray[np.float32]) -> None:
    assert a.shape == b.shape
    worst = float(np.abs(a - b).max())
    assert worst <= TOLERANCE, f"logits differ by {worst} (tolerance {TOLERANCE})"
    top2 = np.sort(a, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > TOLERANCE
    assert clear.any()
    assert (a.argmax(axis=1) == b.argmax(axis=1))[clear].all()


def test_prefill_then_decode_gives_the_logits_of_one_pass_at_every_position(model: Path) -> None:
    tokens = tokens_of(model)
    assert len(tokens) > PREFILL + 10
    one_pass = logits(model, [tokens])
    prefill_decode = logits(model, [tokens[:PREFILL], *([t] for t in tokens[PREFILL:])])
    token_by_token = logits(model, [[t] for t in tokens])
    assert one_pass.shape == (len(tokens), one_pass.shape[1])
    agree(one_pass, prefill_decode)
    agree(one_pass, token_by_token)


def test_the_check_fails_when_the_kv_cache_holds_another_token(model: Path) -> None:
    tokens = tokens_of(model)
    other = [*tokens]
    other[2] = tokens[3]  # one other token in the prefix: its keys and values differ
    one_pass = logits(model, [tokens])
    wrong_cache = logits(model, [other[:PREFILL], *([t] for t in tokens[PREFILL:])])
    after = slice(PREFILL, None)
    assert float(np.abs(one_pass[after] - wrong_cache[after]).max()) > 10 * TOLERANCE
    with pytest.raises(AssertionError, match="logits differ"):
        agree(one_pass, wrong_cache)
