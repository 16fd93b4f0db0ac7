"""Log-probabilities of a sampled token, from the logits llama.cpp produced for it (WRK-02).

`logprobs_from_logits` is pure: a numerically stable log-softmax over the whole
vocabulary (`x - max - log(sum(exp(x - max)))`, in float64, so a vocabulary of 262k
logits in the hundreds neither overflows nor loses the small probabilities), the sampled
token's value, and the `top_n` most likely tokens, most likely first (ties by token id).
The values are the model's own distribution, before temperature, penalties, grammar or
truncation samplers: what OpenAI's `logprobs` reports.

`sampled_logprobs` reads the logits of the last decoded position straight from the
llama.cpp context (`llama_get_logits_ith(ctx, -1)`): when `Llama.generate` yields a
token, those are the logits it was sampled from (the next decode has not run yet). It
runs only for requests that asked for logprobs, on the slot's thread.
"""

from __future__ import annotations

from collections.abc import Callable

import llama_cpp
import numpy as np
import numpy.typing as npt
from llama_cpp import Llama

from worker_adapters.types import TokenLogprob, TopLogprob

__all__ = ["MAX_TOP_LOGPROBS", "logprobs_from_logits", "sampled_logprobs"]

MAX_TOP_LOGPROBS = 20  # the API's bound (API-02); more is refused before it gets here


def logprobs_from_logits(
    logits: npt.NDArray[np.floating], token: int, top_n: int, piece: Callable[[int], bytes]
) -> TokenLogprob:
    """The sampled `token`'s logprob and the `top_n` best alternatives; `piece(id)` gives a
    token's bytes."""
    values = logits.astype(np.float64, copy=False)
    peak = float(values.max())
    log_total = peak + float(np.log(np.exp(values - peak).sum()))
    top_n = max(0, min(top_n, MAX_TOP_LOGPROBS, values.size))
    top: tuple[TopLogprob, ...] = ()
    if top_n:
        candidates = np.argpartition(-values, top_n - 1)[:top_n]
        ordered = sorted(candidates.tolist(), key=lambda i: (-values[i], i))
        top = tuple(_top(i, float(values[i]) - log_total, piece) for i in ordered)
    data = piece(token)
    return TokenLogprob(_text(data), _clamp(float(values[token]) - log_total), data, top)


def sampled_logprobs(llama: Llama, token: int, top_n: int) -> TokenLogprob:
    """Logprobs of `token`, sampled from the last decoded position of `llama`'s context."""
    n_vocab = llama.n_vocab()
    pointer = llama_cpp.llama_get_logits_ith(llama._ctx.ctx, -1)
    logits = np.ctypeslib.as_array(pointer, shape=(n_vocab,))
    model = llama._model
    return logprobs_from_logits(logits, token, top_n, lambda i: model.detokenize([i]))


def _top(token: int, logprob: float, piece: Callable[[int], bytes]) -> TopLogprob:
    data = piece(token)
    return TopLogprob(_text(data), _clamp(logprob), data)


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _clamp(logprob: float) -> float:
    """A probability is at most 1: rounding may leave the best token at +1e-16."""
    return min(logprob, 0.0)
