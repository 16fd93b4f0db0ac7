"""Determinism suite (TST-04, issue 12 item 5): two single-slot pools of the same engine
build and model stream byte-identical tokens for 64 fixed seeds, for the in-process
engine (`llamacpp-inproc`) and for llama-server (`llamacpp`).

Per form a cluster of two single-slot pools of the tiny fixture model: `ip-a`/`ip-b`
in-process, `ls-a`/`ls-b` llama-server (built from source once per machine). Each seed runs once on
each pool of a form, pinned, 16 tokens at temperature 1 (so the seed decides every
token), all seeds of both pools submitted together. `ci_harness.determinism` compares
the streams: the report records the engine build (version and binary digest) and the
model digest, and names the first differing token of any seed that differs. A test
perturbs one pool's seed and shows the report fail, naming that token.
(KV equivalence of the in-process engine: worker-adapters/tests/test_kv_equivalence.py.)
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import llama_cpp
import pytest
from ci_harness.cluster import Cluster, tiny_pool
from ci_harness.determinism import DeterminismReport, PoolRun, compare_runs
from provisioners.engines.prepared import PreparedEngine
from provisioners.testing import llama_server_for_tests

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300, func_only=True)]
SEEDS = range(64)
TOKENS = 16
PROMPT = "Once upon a time"
PERTURB = 1_000_003  # added to one pool's seeds to show the suite can fail
LEASE = {"lease_ms": 30_000}
FORMS = {"inproc": ("ip-a", "ip-b"), "llama-server": ("ls-a", "ls-b")}


@pytest.fixture(scope="module")
def llama_server() -> PreparedEngine:
    """The test llama-server (built once per machine, then found; not bounded by the
    test timeout, as in test_engine_pools)."""
    return llama_server_for_tests()


@pytest.fixture(scope="module", params=list(FORMS))
def form(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def cluster(
    form: str,
    tiny_model: Path,
    llama_server: PreparedEngine,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Cluster]:
    """The form's two single-slot pools, in a cluster of their own."""
    if form == "llama-server":
        engine = {"engine": "llamacpp", "engine_command": list(llama_server.command)}
    else:
        engine = {}
    pools = [tiny_pool(pool_id, tiny_model, ctx=4096, **engine) for pool_id in FORMS[form]]
    # A long lease: this suite is about streams, and a burst on two shared cores can
    # delay the pool manager's snapshots past the default 6 s (then the host is "lost").
    cluster = Cluster(tmp_path_factory.mktemp("determinism"), {"host-a": pools}, LEASE)
    cluster.start()
    cluster.wait_ready([pool["id"] for pool in pools], timeout_s=120)
    yield cluster
    assert all(code == 0 for code in cluster.stop().values()), cluster.logs()


def engine_build(form: str, llama_server: PreparedEngine) -> str:
    """What identifies the engine's build beyond the version a pool reports."""
    if form == "llama-server":
        return (
            f"llama-server {llama_server.version} from llama-cpp-python 0.3.36's sdist "
            f"(its llama.cpp tree), binary sha256 {llama_server.digest}"
        )
    lib = Path(llama_cpp.__file__).parent / "lib" / "libllama.so"
    digest = hashlib.sha256(lib.resolve().read_bytes()).hexdigest()
    return f"libllama {lib.resolve().name.removeprefix('libllama.so.')}, sha256 {digest}"


def submit(cluster: Cluster, body: dict[str, Any]) -> httpx.Response:
    """Submit as a client should: a retriable 503 is tried again after its Retry-After
    (a burst of 128 jobs on two shared cores can make a pool's lease late for a moment)."""
    deadline = time.monotonic() + 60.0
    while True:
        response = cluster.submit(body)
        if response.status_code != 503 or time.monotonic() > deadline:
            assert response.status_code == 202, response.text
            return response
        assert response.json()["retriable"] is True, response.text
        time.sleep(int(response.headers["Retry-After"]))


def stream(cluster: Cluster, pool_id: str, seed: int) -> tuple[list[bytes], dict[str, Any]]:
    """The engine tokens (bytes, from the logprob entries) and the `started` data of one
    pinned task."""
    body = {
        "model": "default",
        "prompt": PROMPT,
        "max_tokens": TOKENS,
        "temperature": 1.0,
        "seed": seed,
        "logprobs": 0,  # one entry per engine token: the token boundaries
        "placement": {"pin_pool_id": pool_id},
    }
    response = submit(cluster, body)
    events = cluster.events(response.json()["task_id"])
    assert events[-1].name == "end", events[-1]
    assert events[0].name == "started" and events[0].data["pool_id"] == pool_id
    tokens = [e for e in events if e.name == "token"]
    engine_tokens = [bytes(entry["bytes"]) for e in tokens for entry in e.data["logprobs"]]
    # One entry per token in-process; llama-server reports a token that ends inside a
    # UTF-8 character together with the next (so 13 entries for 16 tokens may come).
    assert 0 < len(engine_tokens) <= events[-1].data["tokens_out"], (engine_tokens, tokens)
    return engine_tokens, events[0].data


def run_pools(
    cluster: Cluster, pools: tuple[str, str], seeds: range, right_offset: int = 0
) -> tuple[PoolRun, PoolRun]:
    """Every seed on both pools, all submitted at once; the right pool's seeds shifted by
    `right_offset` (0: the same seeds)."""
    jobs = [(pool, seed) for seed in seeds for pool in pools]
    with ThreadPoolExecutor(6) as executor:  # keeps both single-slot queues busy
        results = list(
            executor.map(
                lambda job: stream(
                    cluster, job[0], job[1] + (right_offset if job[0] == pools[1] else 0)
                ),
                jobs,
            )
        )
    runs = []
    for pool in pools:
        mine = [(seed, r) for (p, seed), r in zip(jobs, results, strict=True) if p == pool]
        started = mine[0][1][1]
        runs.append(
            PoolRun(
                pool,
                started["engine"],
                started["engine_version"],
                started["model_digest"],
                {seed: tokens for seed, (tokens, _) in mine},
            )
        )
    return runs[0], runs[1]


def determinism(
    cluster: Cluster, form: str, llama_server: PreparedEngine, right_offset: int = 0
) -> DeterminismReport:
    seeds = SEEDS if right_offset == 0 else range(4)
    left, right = run_pools(cluster, FORMS[form], seeds, right_offset)
    report = compare_runs(left, right, engine_build=engine_build(form, llama_server))
    print(report.text())
    return report


def test_two_pools_of_one_build_and_model_stream_byte_identical_tokens_for_64_seeds(
    cluster: Cluster, llama_server: PreparedEngine, form: str
) -> None:
    report = determinism(cluster, form, llama_server)
    assert report.passed, report.text()
    assert report.seeds == tuple(SEEDS) and report.tokens >= len(SEEDS) * TOKENS // 2
    assert len(report.model_digest) == 64
    assert "sha256" in report.engine_build


def test_a_perturbed_seed_on_one_pool_fails_the_suite_naming_the_first_differing_token(
    cluster: Cluster, llama_server: PreparedEngine, form: str
) -> None:
    report = determinism(cluster, form, llama_server, right_offset=PERTURB)
    assert not report.passed and not report.problems
    assert report.differences, report.text()
    text = report.text()
    for difference in report.differences:
        assert difference.left != difference.right
        named = f"seed {difference.seed}: first differing token #{difference.index}: "
        assert named + repr(difference.left) in text or named + "<end" in text, text
