"""Measured pool performance and prompt-prefix index, for placement (ADM-04, PLC-03).

Per pool: decayed averages of decode and prefill rates (tokens per second) from
completed jobs, and a bounded LRU of the prompt-prefix keys the pool served (what its
prompt cache probably holds). `prefix_keys(text)` turns a prompt into cumulative hashes
of its leading `PREFIX_CHUNK_BYTES` chunks: two prompts share key i exactly when they
share their first i+1 chunks.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

__all__ = ["PREFIX_CHUNK_BYTES", "PoolStats", "StatsBook", "prefix_keys"]

PREFIX_CHUNK_BYTES = 256
_MAX_CHUNKS = 64
_PREFIX_LRU = 4096
_WEIGHT = 0.2


def prefix_keys(text: str) -> tuple[int, ...]:
    data = text.encode()[: PREFIX_CHUNK_BYTES * _MAX_CHUNKS]
    keys, running = [], 0
    for start in range(0, len(data) - PREFIX_CHUNK_BYTES + 1, PREFIX_CHUNK_BYTES):
        running = hash((running, data[start : start + PREFIX_CHUNK_BYTES]))
        keys.append(running)
    return tuple(keys)


@dataclass(slots=True)
class PoolStats:
    decode_tokens_per_s: float = 0.0
    prefill_tokens_per_s: float = 0.0
    prefixes: OrderedDict[int, None] = field(default_factory=OrderedDict)

    def observe(
        self, *, prefill_tokens: float, tokens_out: int, prefill_s: float, decode_s: float
    ) -> None:
        """One finished job. `prefill_tokens`: the prompt tokens the engine evaluated,
        not those it served from its prompt cache (counting those would make a pool that
        hits its cache look fast at prefill, and draw new prompts it does not hold)."""
        if tokens_out > 1 and decode_s > 0.005:
            self.decode_tokens_per_s = _blend(self.decode_tokens_per_s, tokens_out / decode_s)
        if prefill_tokens >= 1.0 and prefill_s > 0.0005:
            rate = prefill_tokens / prefill_s
            self.prefill_tokens_per_s = _blend(self.prefill_tokens_per_s, rate)

    def remember(self, keys: tuple[int, ...]) -> int:
        """Add a served prompt's keys; returns how many leading ones were known already
        (the chunks the pool's prompt cache probably held for it)."""
        known = 0
        for key in keys:
            if key not in self.prefixes:
                break
            known += 1
        for key in keys:
            self.prefixes[key] = None
            self.prefixes.move_to_end(key)
        while len(self.prefixes) > _PREFIX_LRU:
            self.prefixes.popitem(last=False)
        return known


def _blend(previous: float, sample: float) -> float:
    return sample if previous == 0.0 else previous + _WEIGHT * (sample - previous)


class StatsBook:
    def __init__(self) -> None:
        self._pools: dict[str, PoolStats] = {}

    def pool(self, pool_id: str) -> PoolStats:
        return self._pools.setdefault(pool_id, PoolStats())

    def known(self, pool_id: str) -> PoolStats | None:
        return self._pools.get(pool_id)
