"""What the gateway benchmarks share: processes pinned to cores, CPU read from /proc, the
systems under test (fake engine, pass-through, llorch, LiteLLM) and the streaming load
client. Run the benchmarks as modules from the workspace root (`python -m bench.NAME`).

CPU accounting: a process tree's CPU time is read from `/proc/<pid>/task/<tid>/schedstat`
(nanoseconds on CPU, per thread), summed over the process and its descendants, before
and after a measurement. `utime+stime` from `/proc/<pid>/stat` is read too (it also
counts threads that exited, but in 10 ms ticks) and kept in the JSON as a cross-check.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import aiohttp
import yaml

__all__ = [
    "BENCH_DIR",
    "GATEWAY_CORE",
    "LITELLM_VERSION",
    "LOAD_CORE",
    "Cpu",
    "Llorch",
    "Proc",
    "Recorder",
    "System",
    "Wrap",
    "baseline_tree",
    "machine_info",
    "median",
    "percentile",
    "pin_self",
    "set_engine",
    "settle",
    "start_engine",
    "start_litellm",
    "start_llorch",
    "start_passthrough",
    "stream_once",
]

BENCH_DIR = Path(__file__).resolve().parent
GATEWAY_CORE = 0
LOAD_CORE = 1
# 1.107.0 was a compromised release on PyPI; 1.106.2 is what the pilot measured (§3.3).
LITELLM_VERSION = "1.106.2"
LITELLM_VENV = Path.home() / ".cache" / "llorch" / "bench" / "litellm-venv"
MODEL = "bench"
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_START_WAIT_S = 120.0

Protocol = Literal["openai", "llorch"]


# -- cores and CPU time ---------------------------------------------------------------


def _cores() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def pin_self(core: int) -> None:
    """Pin this process (and the children it starts from now on) to one core."""
    os.sched_setaffinity(0, {core})


Cores = int | frozenset[int] | None  # one core, a set of cores, or no pinning
# A command run inside something (`ci_harness.fleet.Fleet.command`: a network namespace).
Wrap = Callable[[list[str]], list[str]]


def _pinned(core: Cores) -> Callable[[], None] | None:
    if core is None:
        return None
    cores = {core} if isinstance(core, int) else set(core)
    return lambda: os.sched_setaffinity(0, cores)


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        with contextlib.suppress(OSError):
            found += [int(c) for c in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
    return found


def tree(pid: int) -> list[int]:
    """`pid` and all its descendants alive now."""
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        todo += _children(current)
    return pids


@dataclass(frozen=True, slots=True)
class Cpu:
    """CPU seconds of some processes: precise (schedstat) and in ticks (stat)."""

    sched_s: float = 0.0
    ticks_s: float = 0.0

    @staticmethod
    def read(pids: Sequence[int]) -> Cpu:
        sched_ns = 0
        ticks = 0
        for pid in pids:
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = Path(f"/proc/{pid}/stat").read_text()
                fields = stat[stat.rindex(")") + 2 :].split()
                ticks += int(fields[11]) + int(fields[12])  # utime, stime
                for tid in os.listdir(f"/proc/{pid}/task"):
                    with contextlib.suppress(OSError, ValueError):
                        sched_ns += int(
                            Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0]
                        )
        return Cpu(sched_ns / 1e9, ticks / _CLK_TCK)

    def __sub__(self, other: Cpu) -> Cpu:
        return Cpu(self.sched_s - other.sched_s, self.ticks_s - other.ticks_s)


def own_cpu() -> Cpu:
    return Cpu.read([os.getpid()])


async def settle(pids: Callable[[], list[int]], quiet: float = 0.05, limit_s: float = 5.0) -> None:
    """Wait until the processes use less than `quiet` of a core (a backlog finished)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        before = Cpu.read(pids())
        await asyncio.sleep(0.1)
        if (Cpu.read(pids()) - before).sched_s < 0.1 * quiet:
            return


# -- processes --------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def pids(self) -> list[int]:
        return tree(self.pid) if self.popen.poll() is None else []

    def check(self) -> None:
        if self.popen.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{tail}")

    def stop(self, grace_s: float = 10.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def spawn(
    name: str,
    command: Sequence[str],
    logs: Path,
    *,
    core: Cores,
    env: dict[str, str] | None = None,
    unset: Sequence[str] = (),
    cwd: Path | None = None,
) -> Proc:
    log = logs / f"{name}.log"
    environment = {k: v for k, v in os.environ.items() if k not in unset}
    with log.open("ab") as out:
        popen = subprocess.Popen(
            list(command),
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**environment, **(env or {})},
            cwd=cwd,
            preexec_fn=_pinned(core),  # before exec: every thread inherits the core
        )
    return Proc(name, popen, log)


def _wait(what: str, probe: Callable[[], Any], procs: Sequence[Proc], limit_s: float) -> Any:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        for proc in procs:
            proc.check()
        result = probe()
        if result:
            return result
        time.sleep(0.05)
    raise RuntimeError(f"timed out after {limit_s:.0f} s waiting for {what}")


def _read_port(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _http_ok(url: str, headers: dict[str, str] | None = None) -> bool:
    import urllib.error
    import urllib.request

    try:
        request = urllib.request.Request(url, headers=headers or {})
        with urllib.request.urlopen(request, timeout=2) as response:
            return bool(200 <= response.status < 300)
    except (urllib.error.URLError, OSError):
        return False


def _http_json(url: str, body: Any = None) -> Any:
    import urllib.request

    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json"} if data else {}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def start_engine(
    logs: Path,
    *,
    core: int = LOAD_CORE,
    interval_ms: float = 0.0,
    host: str = "127.0.0.1",
    wrap: Wrap | None = None,
    name: str = "engine",
) -> tuple[Proc, str]:
    """The fake engine on `host`; `wrap` runs it inside something else (a network
    namespace: `Fleet.command`), still pinned to `core` (affinity survives the exec)."""
    port_file = logs / f"{name}.port"
    port_file.unlink(missing_ok=True)
    command = [
        sys.executable,
        str(BENCH_DIR / "fake_engine.py"),
        "--host",
        host,
        "--port-file",
        str(port_file),
        "--model",
        MODEL,
        "--interval-ms",
        str(interval_ms),
    ]
    proc = spawn(name, wrap(command) if wrap else command, logs, core=core)
    try:
        port = _wait("the fake engine", lambda: _read_port(port_file), [proc], 30)
    except BaseException:  # failed or interrupted: not left running
        proc.stop()
        raise
    return proc, f"http://{host}:{port}"


def start_passthrough(logs: Path, upstream: str, *, core: int = GATEWAY_CORE) -> tuple[Proc, str]:
    port_file = logs / "passthrough.port"
    port_file.unlink(missing_ok=True)
    command = [
        sys.executable,
        str(BENCH_DIR / "passthrough.py"),
        "--upstream",
        upstream,
        "--port-file",
        str(port_file),
    ]
    proc = spawn("passthrough", command, logs, core=core)
    port = _wait("the pass-through", lambda: _read_port(port_file), [proc], 30)
    return proc, f"http://127.0.0.1:{port}"


def set_engine(base_url: str, *, interval_ms: float, ttft_ms: float = 0.0) -> None:
    """Change a fake engine's pacing (`POST /bench/config`)."""
    _http_json(f"{base_url}/bench/config", {"interval_ms": interval_ms, "ttft_ms": ttft_ms})


def engine_stats(base_url: str) -> dict[str, int]:
    stats: dict[str, int] = _http_json(f"{base_url}/bench/stats")
    return stats


# -- llorch -----------------------------------------------------------------------------


@dataclass
class Llorch:
    orchestratord: Proc
    manager: Proc
    url: str
    engine_url: str

    def gateway_pids(self) -> list[int]:
        return self.orchestratord.pids()

    def engine_pids(self) -> list[int]:
        return self.manager.pids()  # pool-managerd and the engine it started

    def stop(self) -> None:
        self.manager.stop(15)
        self.orchestratord.stop(15)


def start_llorch(
    root: Path,
    logs: Path,
    *,
    slots: int,
    log_level: str = "INFO",
    orchestrator: dict[str, Any] | None = None,
    launcher: Sequence[str] = (),
    source: Path | None = None,
    name: str = "",
    pool: dict[str, Any] | None = None,
    gateway_core: Cores = GATEWAY_CORE,
    engine_cores: Cores = LOAD_CORE,
    ready_timeout_s: float = 90.0,
    control_host: str = "127.0.0.1",
    manager_wrap: Wrap | None = None,
) -> Llorch:
    """orchestratord on the gateway core; pool-managerd and its `openai-compatible` fake
    engine (one pool `bench`, one replica of `slots` slots) on the load core.
    `launcher` replaces the interpreter of orchestratord (e.g. `python -m cProfile -o F`);
    `source` runs orchestratord from another tree's sources (`baseline_tree`), to
    measure before and after a change in one run. `name` tells the processes apart.
    `pool` replaces the fake-engine pool (e.g. a `llamacpp` pool on a GPU).
    `control_host`: where orchestratord's control link listens and pool-managerd dials
    it; `manager_wrap` runs pool-managerd (and so its engine) inside something else,
    e.g. another host's network namespace (`Fleet.command`), where its engine binds and
    is advertised at that host's address. A control link off loopback is plaintext with
    `insecure: true` on both sides (a benchmark on one machine's private bridge)."""
    root.mkdir(parents=True, exist_ok=True)
    off_host = not ipaddress.ip_address(control_host).is_loopback
    link = {"insecure": True} if off_host else {}
    token = secrets.token_urlsafe(16)
    env = {"LLORCH_JOIN_TOKEN": token}
    orchestrator_env = dict(env)
    if source is not None:
        orchestrator_env["PYTHONPATH"] = os.pathsep.join(
            str(source / member / "src") for member in _BASELINE_MEMBERS
        )
    config = {
        "http_port": 0,
        "control_port": 0,
        "state_dir": str(root / "orchestratord"),
        "disconnect_grace_ms": 500,
        **({"control_host": control_host, **link} if off_host else {}),
        **(orchestrator or {}),
    }
    (root / "orchestratord.yaml").write_text(yaml.safe_dump(config))
    ready = root / "orchestratord.ready"
    ready.unlink(missing_ok=True)
    orchestratord = spawn(
        f"orchestratord{name}",
        [
            *(launcher or (sys.executable,)),
            "-m",
            "orchestratord",
            "--config",
            str(root / "orchestratord.yaml"),
            "--ready-file",
            str(ready),
            "--log-level",
            log_level,
        ],
        logs,
        core=gateway_core,
        env=orchestrator_env,
    )

    def ports() -> dict[str, int] | None:
        try:
            loaded: dict[str, int] = json.loads(ready.read_text())
        except (OSError, ValueError):
            return None
        return loaded

    with contextlib.ExitStack() as undo:  # failed or interrupted: stop what started
        undo.callback(orchestratord.stop, 15)
        bound = _wait("orchestratord", ports, [orchestratord], 60)
        url = f"http://127.0.0.1:{bound['http_port']}"
        pool = pool or {
            "id": MODEL,
            "engine": "openai-compatible",
            "engine_command": [
                sys.executable,
                str(BENCH_DIR / "fake_engine.py"),
                "--host",
                "{host}",
                "--port",
                "{port}",
                "--model",
                MODEL,
            ],
            "ctx": 32768,
            "slots": slots,
            "replicas": 1,
        }
        manager_config = {
            "host_id": "bench",
            "orchestrator": f"{control_host}:{bound['control_port']}",
            "state_dir": str(root / "pool-managerd"),
            "pools": [pool],
            **link,
        }
        (root / "pool-managerd.yaml").write_text(yaml.safe_dump(manager_config))
        manager_command = [
            sys.executable,
            "-m",
            "pool_managerd",
            "--config",
            str(root / "pool-managerd.yaml"),
        ]
        manager = spawn(
            f"pool-managerd{name}",
            manager_wrap(manager_command) if manager_wrap else manager_command,
            logs,
            core=engine_cores,
            env=env,
        )
        undo.callback(manager.stop, 15)

        def endpoint() -> str | None:
            try:
                info = _http_json(f"{url}/v2/pools/{pool['id']}")
            except OSError:
                return None
            if not info.get("ready"):
                return None
            replicas = info.get("replicas") or []
            return str(replicas[0]["endpoint"]) if replicas and replicas[0]["endpoint"] else None

        engine = _wait(
            "the llorch pool to be ready", endpoint, [orchestratord, manager], ready_timeout_s
        )
        undo.pop_all()  # started: the caller stops them
        return Llorch(orchestratord, manager, url, f"http://{engine}")


_BASELINE_MEMBERS = ("specs", "worker-adapters", "adapter-host", "orchestratord")


def baseline_tree(revision: str) -> Path:
    """The orchestrator's packages as of a git revision, extracted once under
    ~/.cache/llorch/bench (for `start_llorch(source=...)`)."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", revision],
        cwd=BENCH_DIR.parent,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    tree = Path.home() / ".cache" / "llorch" / "bench" / f"baseline-{commit}"
    if not (tree / "orchestratord").exists():
        tree.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "archive", commit, *_BASELINE_MEMBERS],
            cwd=BENCH_DIR.parent,
            check=True,
            capture_output=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


# -- LiteLLM ----------------------------------------------------------------------------


def ensure_litellm(venv: Path = LITELLM_VENV) -> Path:
    """The LiteLLM proxy's venv, created the first time (uv venv + uv pip install)."""
    litellm = venv / "bin" / "litellm"
    python = venv / "bin" / "python"
    if litellm.exists():
        return litellm
    uv = shutil.which("uv")
    if uv is None:
        raise RuntimeError("uv is needed to create the LiteLLM venv (https://docs.astral.sh/uv/)")
    venv.parent.mkdir(parents=True, exist_ok=True)
    print(f"installing litellm[proxy]=={LITELLM_VERSION} into {venv} (first run only)")
    subprocess.run([uv, "venv", "--python", sys.executable, str(venv)], check=True)
    subprocess.run(
        [uv, "pip", "install", "--python", str(python), f"litellm[proxy]=={LITELLM_VERSION}"],
        check=True,
    )
    return litellm


def start_litellm(
    root: Path, logs: Path, upstream: str, *, core: int = GATEWAY_CORE
) -> tuple[Proc, str, str]:
    """LiteLLM proxy, one worker, no database, no callbacks, no retries; returns the
    process, its URL and its master key."""
    litellm = ensure_litellm()
    key = "sk-" + secrets.token_hex(16)
    config = {
        "model_list": [
            {
                "model_name": MODEL,
                "litellm_params": {
                    "model": f"openai/{MODEL}",
                    "api_base": f"{upstream}/v1",
                    "api_key": "sk-engine",
                },
            }
        ],
        "litellm_settings": {
            "num_retries": 0,
            "request_timeout": 600,
            "callbacks": [],
            "success_callback": [],
            "failure_callback": [],
        },
        "router_settings": {"num_retries": 0},
        "general_settings": {"master_key": key},
    }
    path = root / "litellm.yaml"
    path.write_text(yaml.safe_dump(config))
    port = _free_port()
    env = {
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_MODE": "PRODUCTION",
        "DISABLE_ADMIN_UI": "True",
    }
    proc = spawn(
        "litellm",
        [
            str(litellm),
            "--config",
            str(path),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--num_workers",
            "1",
        ],
        logs,
        core=core,
        env=env,
        unset=("DATABASE_URL", "REDIS_HOST", "REDIS_URL", "LITELLM_LOG"),  # no DB, no cache
        cwd=root,
    )
    url = f"http://127.0.0.1:{port}"
    _wait("the LiteLLM proxy", lambda: _http_ok(f"{url}/health/liveliness"), [proc], _START_WAIT_S)
    return proc, url, key


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- the systems and the load client ------------------------------------------------------


@dataclass
class System:
    """One way to reach the engine. `two_step`: POST /v2/tasks, then GET its events."""

    name: str
    url: str
    path: str
    protocol: Protocol
    gateway: Callable[[], list[int]]  # pids whose CPU is the gateway's ([] for direct)
    engine: Callable[[], list[int]]  # pids of the engine side (load core)
    headers: dict[str, str] = field(default_factory=dict)
    two_step: bool = False
    keepalive: bool = True  # False: a new connection per request (llama-server closes them)

    def body(self, tokens: int) -> bytes:
        messages = [{"role": "user", "content": "Tell me a story about a quick brown fox."}]
        if self.protocol == "llorch":
            wire: dict[str, Any] = {
                "workload": "chat",
                "model": MODEL,
                "messages": messages,
                "max_tokens": tokens,
            }
        else:
            wire = {"model": MODEL, "messages": messages, "max_tokens": tokens, "stream": True}
        return json.dumps(wire).encode()


@dataclass
class Recorder:
    """What the client saw: per-request TTFT, inter-token gaps, counts in a time window."""

    tokens_expected: int
    window_start: float = 0.0
    window_end: float = float("inf")
    gaps_in_window_only: bool = False
    ttft: list[float] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)
    token_events: int = 0
    tokens_in_window: int = 0
    requests_ok: int = 0
    requests_in_window: int = 0
    requests_cut: int = 0
    errors: int = 0
    retries: int = 0
    short: int = 0
    error_samples: list[str] = field(default_factory=list)

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(what[:300])


_OPENAI_TOKEN = b'"content":"'
_OPENAI_EMPTY = b'"content":""'


def _openai_event(event: bytes) -> int:
    """1 token, 2 done, 3 error, 0 other."""
    if _OPENAI_TOKEN in event and _OPENAI_EMPTY not in event:
        return 1
    if event.startswith(b"data: [DONE]"):
        return 2
    if event.startswith(b'data: {"error"'):
        return 3
    return 0


def _llorch_event(event: bytes) -> int:
    if b"\nevent: token\n" in event:
        return 1
    if b"\nevent: end\n" in event:
        return 2
    if b"\nevent: error\n" in event:
        return 3
    return 0


async def _request(
    record: Recorder, session: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> aiohttp.ClientResponse:
    """The response's head; a kept-alive connection the server had just closed is
    retried once on a new one (cpp-httplib closes one after every 5 requests)."""
    try:
        return await session.request(method, url, **kwargs)
    except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError):
        record.retries += 1
        return await session.request(method, url, **kwargs)


async def stream_once(
    session: aiohttp.ClientSession, system: System, body: bytes, record: Recorder
) -> None:
    """One request, start to end; everything it sees goes into `record`."""
    perf = time.perf_counter
    started = perf()
    headers = {"Content-Type": "application/json", **system.headers}
    url = system.url + system.path
    cancel_url = ""
    if system.two_step:
        async with session.post(url, data=body, headers=headers) as accepted:
            if accepted.status != 202:
                record.error(f"HTTP {accepted.status}: {(await accepted.read())[:200]!r}")
                return
            admitted = await accepted.json()
            url = system.url + str(admitted["events_url"])
            cancel_url = f"{system.url}/v2/tasks/{admitted['task_id']}/cancel"
        request = _request(record, session, "GET", url, headers=system.headers)
    else:
        if system.protocol == "llorch":
            headers["Accept"] = "text/event-stream"
        request = _request(record, session, "POST", url, data=body, headers=headers)
    classify = _llorch_event if system.protocol == "llorch" else _openai_event
    tokens = 0
    last = 0.0
    outcome = 0
    try:
        async with await request as response:
            if response.status != 200:
                record.error(f"HTTP {response.status}: {(await response.read())[:200]!r}")
                return
            buffer = b""
            content = response.content
            while outcome == 0:
                chunk = await content.readany()
                if not chunk:
                    break
                now = perf()
                buffer = buffer + chunk if buffer else chunk
                if b"\n\n" not in buffer:
                    continue
                events = buffer.split(b"\n\n")
                buffer = events.pop()
                in_window = record.window_start <= now <= record.window_end
                for event in events:
                    kind = classify(event)
                    if kind == 1:
                        if tokens == 0:
                            record.ttft.append(now - started)
                        elif in_window or not record.gaps_in_window_only:
                            record.gaps.append(now - last)
                        last = now
                        tokens += 1
                        if in_window:
                            record.tokens_in_window += 1
                    elif kind:
                        outcome = kind
                        if kind == 3:
                            record.error(event.decode(errors="replace"))
                        break
            while outcome and await content.readany():  # to EOF: the connection is reused
                pass
    except asyncio.CancelledError:
        record.requests_cut += 1
        if cancel_url:  # a two-step job runs on without its reader: cancel it, as a client
            cancelling = asyncio.ensure_future(_cancel(session, cancel_url, system.headers))
            _CANCELS.add(cancelling)
            cancelling.add_done_callback(_CANCELS.discard)
        raise
    finally:
        record.token_events += tokens
    if outcome == 2:
        if record.tokens_expected and tokens != record.tokens_expected:
            record.short += 1
            record.error(f"{tokens} token events instead of {record.tokens_expected}")
            return
        record.requests_ok += 1
        if record.window_start <= perf() <= record.window_end:
            record.requests_in_window += 1
    elif outcome == 0:
        record.error(f"stream ended without a terminal event after {tokens} tokens")


_CANCELS: set[asyncio.Future[None]] = set()


async def _cancel(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> None:
    try:
        async with session.post(url, headers=headers) as response:
            await response.read()
    except (aiohttp.ClientError, RuntimeError):
        pass  # the session closed first: the job ends with the next run's drain anyway


def client_session(connections: int, *, keepalive: bool = True) -> aiohttp.ClientSession:
    connector = (
        aiohttp.TCPConnector(limit=connections + 8, keepalive_timeout=30.0)
        if keepalive
        else aiohttp.TCPConnector(limit=connections + 8, force_close=True)
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None, sock_read=120.0, sock_connect=10.0),
        auto_decompress=False,
    )


# -- statistics and the machine -------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100.0 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def median_rounds(
    runs: Sequence[dict[str, Any]],
    keys: Sequence[str],
    medians: Sequence[str],
    sums: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """One row per distinct value of `keys` among the rounds' runs (first seen first):
    the keys, `rounds`, the total of each of `sums` and the median of each of `medians`."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault(tuple(run[k] for k in keys), []).append(run)
    rows: list[dict[str, Any]] = []
    for group, members in groups.items():
        row: dict[str, Any] = dict(zip(keys, group, strict=True))
        row["rounds"] = len(members)
        for name in sums:
            row[name] = sum(m[name] for m in members)
        for name in medians:
            row[name] = median([m[name] for m in members])
        rows.append(row)
    return rows


def median(values: Sequence[float | None]) -> float | None:
    present = sorted(v for v in values if v is not None)
    if not present:
        return None
    middle = len(present) // 2
    if len(present) % 2:
        return present[middle]
    return (present[middle - 1] + present[middle]) / 2


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return ""


def report_head(
    benchmark: str,
    started: float,
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
) -> dict[str, Any]:
    """The fields every benchmark's JSON report starts with (`started`: time.time())."""
    return {
        "benchmark": benchmark,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "elapsed_s": round(time.time() - started, 1),
        "machine": machine_info(),
        "load_average_before": load_before,
        "load_average_after": load_after,
    }


def machine_info() -> dict[str, Any]:
    return {
        "cpu_model": _cpu_model(),
        "cpus_online": os.cpu_count(),
        "cpus_usable": _cores(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "packages": {
            name: _version(name)
            for name in ("aiohttp", "uvloop", "uvicorn", "starlette", "httptools", "pydantic")
        },
        "litellm": LITELLM_VERSION,
    }


def loadavg() -> tuple[float, float, float]:
    return os.getloadavg()


def announce_load() -> tuple[float, float, float]:
    """Print the load average before a run (a warning when the machine is busy)."""
    load = loadavg()
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if load[0] > 0.5:
        print("warning: the machine is busy (1-minute load > 0.5); numbers will be noisy")
    return load


def run_dir(stack: contextlib.ExitStack, given: Path | None, prefix: str) -> tuple[Path, Path]:
    """The run's folder and its `logs/`: `given` (kept), else a temporary one removed
    when `stack` closes."""
    if given is not None:
        root = given
        root.mkdir(parents=True, exist_ok=True)
    else:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=prefix)))
    logs = root / "logs"
    logs.mkdir(exist_ok=True)
    return root, logs
