"""The determinism report (TST-04): two pools of one engine build and model, given the
same seeds, must stream byte-identical tokens.

Pure: what each pool streamed per seed (`PoolRun`) in, a `DeterminismReport` out. The
report records the engine build and the model digest, checks that both pools really run
the same build and model (a comparison of two different engines proves nothing), and
names, for every seed whose streams differ, the first differing token: its position,
both tokens' bytes, and the tokens the streams agreed on before it. Tokens are the
engine's own (one per logprob entry), not the text chunks of `token` events, whose
grouping depends on timing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["DeterminismReport", "Difference", "PoolRun", "compare_runs", "first_difference"]

_CONTEXT_TOKENS = 4  # agreed tokens shown before a difference


@dataclass(frozen=True, slots=True)
class PoolRun:
    """What one pool streamed: its identity as it reported it, and per seed its tokens."""

    pool_id: str
    engine: str
    engine_version: str
    model_digest: str
    streams: Mapping[int, Sequence[bytes]]  # per seed, each engine token's bytes


@dataclass(frozen=True, slots=True)
class Difference:
    """The first token where the two streams of `seed` part; None: that stream ended."""

    seed: int
    index: int
    left: bytes | None
    right: bytes | None
    before: tuple[bytes, ...]  # the last agreed tokens, up to `_CONTEXT_TOKENS`


@dataclass(frozen=True, slots=True)
class DeterminismReport:
    left: str  # pool ids
    right: str
    engine_build: str
    model_digest: str
    seeds: tuple[int, ...]
    tokens: int  # tokens compared, all seeds
    differences: tuple[Difference, ...]
    problems: tuple[str, ...]  # why the comparison itself is not valid

    @property
    def passed(self) -> bool:
        return not self.differences and not self.problems

    def text(self) -> str:
        verdict = "byte-identical" if self.passed else "NOT identical"
        lines = [
            f"determinism {self.left} vs {self.right}: {verdict}",
            f"  engine build: {self.engine_build}",
            f"  model digest: {self.model_digest}",
            f"  seeds: {len(self.seeds)} ({_span(self.seeds)}), tokens compared: {self.tokens}",
        ]
        lines += [f"  problem: {problem}" for problem in self.problems]
        for d in self.differences:
            agreed = b"".join(d.before)
            lines.append(
                f"  seed {d.seed}: first differing token #{d.index}: "
                f"{_shown(d.left)} ({self.left}) vs {_shown(d.right)} ({self.right}), "
                f"after {agreed!r}"
            )
        return "\n".join(lines)


def first_difference(left: Sequence[bytes], right: Sequence[bytes]) -> int | None:
    """The index of the first token that differs (or where one stream ends before the
    other), None when the streams are the same tokens with the same bytes."""
    for index, (a, b) in enumerate(zip(left, right, strict=False)):
        if a != b:
            return index
    if len(left) != len(right):
        return min(len(left), len(right))
    return None


def compare_runs(left: PoolRun, right: PoolRun, *, engine_build: str) -> DeterminismReport:
    """Compare every seed of `left` with the same seed of `right`."""
    problems = [
        f"{what} differs: {a!r} ({left.pool_id}) vs {b!r} ({right.pool_id})"
        for what, a, b in (
            ("engine", left.engine, right.engine),
            ("engine version", left.engine_version, right.engine_version),
            ("model digest", left.model_digest, right.model_digest),
        )
        if a != b
    ]
    seeds = sorted(set(left.streams) | set(right.streams))
    missing = [s for s in seeds if s not in left.streams or s not in right.streams]
    if missing:
        problems.append(f"seeds streamed by one pool only: {_span(missing)}")
    differences = []
    tokens = 0
    for seed in seeds:
        a, b = left.streams.get(seed, ()), right.streams.get(seed, ())
        tokens += min(len(a), len(b))
        index = first_difference(a, b)
        if index is not None:
            before = tuple(a[max(0, index - _CONTEXT_TOKENS) : index])
            differences.append(Difference(seed, index, _at(a, index), _at(b, index), before))
    if tokens == 0:
        problems.append("no token was compared: the pools streamed nothing")
    return DeterminismReport(
        left.pool_id,
        right.pool_id,
        f"{left.engine} {left.engine_version}; {engine_build}",
        left.model_digest,
        tuple(seeds),
        tokens,
        tuple(differences),
        tuple(problems),
    )


def _at(tokens: Sequence[bytes], index: int) -> bytes | None:
    return tokens[index] if index < len(tokens) else None


def _shown(token: bytes | None) -> str:
    return "<end of stream>" if token is None else repr(token)


def _span(seeds: Sequence[int]) -> str:
    if not seeds:
        return "none"
    if len(seeds) > 1 and list(seeds) == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}..{seeds[-1]}"
    return ", ".join(str(s) for s in seeds)
