"""What the two real-vLLM pool test modules share (`test_vllm_engine_pool.py`: vLLM's
OpenAI server, engine `vllm`; `test_vllm_inproc_pool.py`: `llorch worker --engine vllm`,
engine `vllm-inproc`): one pool of the tiny Llama folder that
`catalog_core.write_tiny_hf_model` writes, on one host of a `Cluster`, started once for
the module (~40 s on a quiet CPU, ~1.5 GiB), and the checks both run against it.

`VllmPool` names the pool and remembers every engine process group it has seen, so that
`running` can check at teardown that none survived the pool manager. The checks take the
caller's official `openai.OpenAI` client duck-typed (the harness does not depend on
`openai`), as `ci_harness.tool_loop` does; how a module reads vLLM's running count
(vLLM's `/metrics`, the worker's health) is the module's, passed in as a function.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
from catalog_core import write_tiny_hf_model

from ci_harness.cluster import Cluster, Event, wait_for
from ci_harness.streams import ProcessStream

__all__ = [
    "CTX",
    "ENGINE_CORE",
    "SLOTS",
    "START_S",
    "Cancelled",
    "VllmPool",
    "cancel_a_long_stream",
    "check_a_v2_task_streams",
    "check_an_openai_client_streams",
    "check_the_venv",
    "process_group",
]

CTX = 2048  # the tiny folder's trained context
SLOTS = 2
START_S = 900.0  # ~40 s alone; up to 10 min seen while other suites loaded both cores
ENGINE_CORE = "VLLM::EngineCore"
LEASE_MS = 30_000  # see `VllmPool.running`


def process_group(process: psutil.Process) -> int | None:
    try:
        return os.getpgid(process.pid)
    except (ProcessLookupError, psutil.Error):
        return None


@dataclass
class VllmPool:
    """The module's one vLLM pool: `host` runs pool `pool_id` of `engine`, served as
    `alias`. Its engine's process-group leader is the pool manager's child whose command
    line holds `leader_argument`, or, where that is None, the port of the pool's endpoint.
    `groups` are the engine process groups seen so far (checked at teardown)."""

    host: str
    pool_id: str
    alias: str
    engine: str
    leader_argument: str | None = None
    groups: set[int] = field(default_factory=set)

    @contextmanager
    def running(
        self, tmp_path_factory: pytest.TempPathFactory, command: list[str], name: str
    ) -> Iterator[Cluster]:
        """One orchestrator and one pool manager with the pool of `command` ready; at exit
        every daemon stopped with 0 and no process of an engine group seen survived.
        `name` names the module's temporary folders."""
        model = write_tiny_hf_model(tmp_path_factory.mktemp(f"{name}-model") / "tiny-hf")
        pool = {
            "id": self.pool_id,
            "model": str(model),
            "engine": self.engine,
            "engine_command": command,
            "ctx": CTX,
            "slots": SLOTS,
            "replicas": 1,
            "aliases": [self.alias],
        }
        # A long lease: vLLM generating on both of a 2-core machine's cores delays the
        # pool manager's snapshots past the default 6 s, and the host is then "lost" (its
        # jobs end WORKER_RESET), which is not what these modules test.
        root = tmp_path_factory.mktemp(f"{name}-pool")
        cluster = Cluster(root, {self.host: [pool]}, {"lease_ms": LEASE_MS})
        try:
            cluster.start_orchestrator()
            cluster.start_manager(self.host)
            cluster.wait_ready([self.pool_id], timeout_s=START_S)
            self.groups.add(os.getpgid(self.leader(cluster).pid))
            yield cluster
        finally:
            codes = cluster.stop()
            survivors = self.wait_for_no_survivors()
            if survivors or any(codes.values()):
                print(cluster.logs())
            assert not survivors, f"vLLM processes survived their pool manager: {survivors}"
            assert all(code == 0 for code in codes.values()), codes

    def wait_for_no_survivors(self, timeout_s: float = 15.0) -> list[int]:
        deadline = time.monotonic() + timeout_s
        while True:
            left = [p.pid for p in psutil.process_iter() if process_group(p) in self.groups]
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.1)

    def endpoint(self, cluster: Cluster) -> str:
        (replica,) = cluster.pool(self.pool_id)["replicas"]
        return str(replica["endpoint"])

    def leader(self, cluster: Cluster) -> psutil.Process:
        """The engine process the pool manager started (its process group's leader)."""
        mark = self.leader_argument or self.endpoint(cluster).rsplit(":", 1)[1]
        manager = psutil.Process(cluster.processes[f"pool-managerd-{self.host}"].pid)
        found = [child for child in manager.children() if mark in child.cmdline()]
        assert len(found) == 1, found
        return found[0]

    def engine_cores(self) -> list[int]:
        """Every `VLLM::EngineCore` process of an engine group seen, wherever it ended up
        (an orphan is re-parented but keeps its process group). Found by its title:
        vLLM's `setproctitle` overwrites the process's environment block."""
        found = []
        for process in psutil.process_iter(["pid", "cmdline"]):
            title = " ".join(process.info["cmdline"] or ())
            if title.startswith(ENGINE_CORE) and process_group(process) in self.groups:
                found.append(int(process.info["pid"]))
        return found

    def manager_log(self, cluster: Cluster) -> list[dict[str, Any]]:
        path = cluster.root / f"pool-managerd-{self.host}.log"
        lines = path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def pool_steps(self, cluster: Cluster, *actions: str) -> list[str]:
        """The pool manager's human lines about this pool, of the log actions named."""
        return [
            str(line["human"])
            for line in self.manager_log(cluster)
            if line.get("pool_id") == self.pool_id and line.get("action") in actions
        ]

    def run_job(self, cluster: Cluster, max_tokens: int = 8) -> list[Event]:
        task = cluster.submit({"model": self.alias, "prompt": "Hello", "max_tokens": max_tokens})
        assert task.status_code == 202, task.text
        return cluster.events(task.json()["task_id"])

    # -- checks both modules run ------------------------------------------------------

    def check_ready_only_after_a_one_token_warm_up(self, cluster: Cluster) -> dict[str, Any]:
        """The pool went loading -> warm-up of 1 token -> ready, in that order; returns
        the pool as the orchestrator shows it."""
        steps = self.pool_steps(cluster, "lifecycle", "warmup")

        def first(fragment: str) -> int:
            return next(i for i, human in enumerate(steps) if fragment in human)

        assert first("-> loading") < first("warms up") < first("finishes its warm-up: 1 token")
        assert first("finishes its warm-up: 1 token") < first("loading -> ready"), steps
        pool = cluster.pool(self.pool_id)
        assert pool["ready"] and pool["engine"] == self.engine, pool
        return pool

    def check_sigkill_restarts_after_backoff_with_one_engine(
        self, cluster: Cluster, what: str
    ) -> None:
        """SIGKILL of the whole engine group (`what`: the leader, as the messages name it)
        is a crash: the pool restarts it after back-off, the killed group is gone, exactly
        one `VLLM::EngineCore` is left (in the new group) and a job runs to its end."""
        restarts = cluster.pool(self.pool_id)["restarts"]
        leader = self.leader(cluster)
        group = os.getpgid(leader.pid)
        assert len(self.engine_cores()) == 1
        os.killpg(group, signal.SIGKILL)

        def back() -> bool:
            pool = cluster.pool(self.pool_id)
            return bool(pool.get("ready") and pool["restarts"] > restarts)

        wait_for(back, f"the {self.engine} pool to restart and be ready", timeout_s=START_S)
        self.groups.add(os.getpgid(self.leader(cluster).pid))
        backoffs = self.pool_steps(cluster, "backoff")
        assert backoffs and "restart in" in backoffs[-1], backoffs
        leftovers = [p.pid for p in psutil.process_iter() if process_group(p) == group]
        assert not leftovers, f"the killed {what}'s process group lives on: {leftovers}"
        new_leader = self.leader(cluster)
        assert new_leader.pid != leader.pid
        cores = self.engine_cores()  # of the old group and the new one
        assert len(cores) == 1, cores
        assert process_group(psutil.Process(cores[0])) == os.getpgid(new_leader.pid)
        assert self.run_job(cluster)[-1].name == "end"


def check_the_venv(
    command: list[str], engines_root: Path, module: str, package_prefix: str
) -> Path:
    """`command` is `PYTHON -m module`, PYTHON of a venv the engine provisioner made
    under `engines_root` for a package named `package_prefix...`; returns PYTHON."""
    python = Path(command[0])
    assert python.is_relative_to(engines_root / "venvs"), python
    assert command[1:] == ["-m", module]
    assert python.parent.parent.name.startswith(package_prefix), python
    return python


def check_a_v2_task_streams(pool: VllmPool, cluster: Cluster, engine_version: str) -> None:
    """A `/v2/tasks` job of 8 tokens streams from the pool, started by its engine at
    `engine_version`, and ends at its length."""
    events = pool.run_job(cluster, max_tokens=8)
    names = [e.name for e in events]
    assert names[0] == "started" and names[-1] == "end" and "token" in names, names
    started = events[0].data
    assert (started["pool_id"], started["engine"]) == (pool.pool_id, pool.engine)
    assert started["engine_version"] == engine_version and started["model_digest"]
    assert events[-1].data["finish_reason"] == "length"
    assert events[-1].data["tokens_out"] == 8
    assert "".join(e.data["t"] for e in events if e.name == "token")


def check_an_openai_client_streams(client: Any, model: str, seed: int | None = None) -> Any:
    """The client streams a chat of 8 tokens (with usage) and gets a completion of 4
    (with `seed` where given) from `model`; returns the completion."""
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Say hello"}],
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
    usage = next(c.usage for c in chunks if c.usage is not None)
    assert text and finish == "length"
    assert usage.completion_tokens == 8 and usage.prompt_tokens > 0
    seeded = {} if seed is None else {"seed": seed}
    completion = client.completions.create(model=model, prompt="Hello", max_tokens=4, **seeded)
    assert completion.choices[0].text and completion.usage is not None
    assert completion.usage.completion_tokens == 4
    return completion


@dataclass
class Cancelled:
    """A long stream cancelled while vLLM ran it: its events, how long after the cancel
    vLLM's running count was 0, and the busy slots seen just before the cancel (None
    where not asked for)."""

    events: list[Event]
    dropped_s: float
    busy: int | None


def cancel_a_long_stream(
    cluster: Cluster,
    model: str,
    running: Callable[[], float],
    seeds: int,
    *,
    busy: Callable[[], int] | None = None,
    retry_ended: bool = False,
) -> Cancelled:
    """Start a stream of 1,800 tokens, wait until `running()` (vLLM's running count)
    says 1, cancel it and wait until `running()` says 0 (within 2 s).

    The tiny random model meets its end-of-sequence token within 1,800 tokens in many
    streams (p ~ 1/2048 a token): a request that ended is never counted as running, so
    seeds are tried (up to `seeds`) until one runs long (each seed's stream is fixed).
    A job the orchestrator no longer shows running just before the cancel is passed
    over too. With `retry_ended`, so is a stream whose last event is its own end (the
    engine finished before the cancel reached it: it shows nothing about the cancel).
    `busy()`, where given, is read just before the cancel.

    What is timed is the system, not the test: the stream is read by a `curl` process
    (`ProcessStream`), and the cancel goes out on a connection opened beforehand (the
    job's status read on it just before). On a loaded machine a reader thread in this
    process, or an HTTP client made on the spot, delayed the cancel by seconds (seen:
    2.3 s to make an `httpx.Client`, whose TLS context loads the CA bundle; a cancel
    that reached the orchestrator 6 s after it was sent), so that the stream ended on
    its own first while the engine's count dropped within 15 ms of every cancel that
    arrived."""
    passed_over: list[str] = []
    with cluster.client() as client:
        for seed in range(seeds):
            body = {"model": model, "prompt": "x", "max_tokens": 1800, "seed": seed}
            submitted = client.post("/v2/tasks", json=body)
            assert submitted.status_code == 202, submitted.text
            task_id = submitted.json()["task_id"]
            stream = ProcessStream(cluster, task_id, cluster.root / f"stream-{task_id}.sse")
            with stream:
                stream.wait_tokens(1)

                def counted(reader: ProcessStream = stream) -> bool:
                    return reader.done or running() == 1

                # vLLM's gauges follow its engine steps; seen lagging a first token
                wait_for(counted, "vLLM to count the long request as running", timeout_s=10.0)
                if stream.done:
                    passed_over.append(f"seed {seed}: ended before vLLM counted it running")
                    continue
                busy_seen = None if busy is None else busy()
                if client.get(f"/v2/tasks/{task_id}").json()["state"] != "running":
                    passed_over.append(f"seed {seed}: ended before the cancel")
                    continue
                cancelled_at = time.monotonic()
                assert client.post(f"/v2/tasks/{task_id}/cancel").status_code == 204
                wait_for(
                    lambda: running() == 0,
                    "vLLM to stop running the cancelled request",
                    timeout_s=2.0,
                )
                dropped_s = time.monotonic() - cancelled_at
                events = stream.result()
            if retry_ended and events[-1].name == "end":  # it ended on its own first
                passed_over.append(f"seed {seed}: the engine ended it before the cancel")
                continue
            return Cancelled(events, dropped_s, busy_seen)
    reasons = "; ".join(passed_over)
    raise AssertionError(f"{seeds} seeds' streams all ended before a cancel: {reasons}")
