"""`Cluster`: real orchestratord + pool-managerd processes, for tests.

On loopback by default; with a `Fleet` (FLT-04) the orchestrator listens on the fleet's
bridge and each pool manager, with its engines, runs in its own network namespace with
its own address, as a separate machine would. With `tls` (a `FleetCerts`) every link
that crosses hosts is TLS: the control link with mutual TLS, the workers' gRPC with the
host's certificate (and the orchestrator's client certificate under `engine_client_auth`).

Timing knobs are shortened for tests (heartbeat 300 ms, lease 1.5 s, probe 200 ms,
restart back-off 0.3 s) so failures are detected quickly; behaviour is otherwise the
production code path. Every wait is bounded and polls a real condition.

Every secret a cluster uses is registered for the session's log scan (`secret_scan`):
its join token, the bearer keys in its headers, and its engines' per-pool keys (read
from their environments once the pools are ready and before they stop).
"""

from __future__ import annotations

import ctypes
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml
from specs.net import host_port

from ci_harness import secret_scan
from ci_harness.fleet import Fleet
from ci_harness.tls import FleetCerts

__all__ = [
    "Cluster",
    "Event",
    "die_with_parent",
    "parse_events",
    "pinned_job",
    "terminate",
    "tiny_pool",
    "wait_for",
    "workers_under",
]

WAIT_S = 60.0
_PR_SET_PDEATHSIG = 1  # prctl(2)


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    name: str
    data: dict[str, Any]


def sse_events(lines: Iterator[str]) -> Iterator[tuple[int | None, str, Any]]:
    """SSE lines as (id or None, name, decoded JSON data), as they arrive; comments
    (heart-beats) are skipped."""
    event_id: int | None = None
    name = "message"
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield event_id, name, json.loads("\n".join(data))
            event_id, name, data = None, "message", []
        elif line.startswith(":"):
            continue
        else:
            key, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if key == "id":
                event_id = int(value)
            elif key == "event":
                name = value
            elif key == "data":
                data.append(value)


def parse_events(lines: Iterator[str]) -> Iterator[Event]:
    """Parse SSE lines; comments are skipped; every event must carry an id."""
    for event_id, name, data in sse_events(lines):
        assert event_id is not None, "an event without id"
        yield Event(event_id, name, data)


def wait_for(condition: Callable[[], Any], what: str, timeout_s: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


@dataclass
class Cluster:
    root: Path
    pools: dict[str, list[dict[str, Any]]]
    orchestrator: dict[str, Any] = field(default_factory=dict)
    hosts: dict[str, dict[str, Any]] = field(default_factory=dict)  # extra manager settings
    headers: dict[str, str] = field(default_factory=dict)  # sent with every API call
    token: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    url: str = ""
    control: str = ""
    ports: dict[str, int] = field(default_factory=dict)  # orchestratord's, once it listens
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    env_extra: dict[str, str] = field(default_factory=dict)  # more environment for daemons
    fleet: Fleet | None = None
    tls: FleetCerts | None = None
    engine_client_auth: bool = False
    ipv6: bool = False  # on a fleet: the control link, and so every link, over IPv6

    def __post_init__(self) -> None:
        secret_scan.register(self.token, "join token")
        for name, value in self.headers.items():
            scheme, _, key = value.partition(" ")
            if name.lower() == "authorization" and scheme.lower() == "bearer":
                secret_scan.register(key.strip(), "API key")

    def register_engine_keys(self) -> None:
        """Register the per-pool keys the pool managers gave their engines (SEC-02)."""
        for name, process in self.processes.items():
            if name.startswith("pool-managerd-") and process.poll() is None:
                for key, what in secret_scan.engine_keys(process.pid).items():
                    secret_scan.register(key, what)

    @property
    def control_host(self) -> str:
        if self.fleet is None:
            return "127.0.0.1"
        return self.fleet.gateway6 if self.ipv6 else self.fleet.gateway

    def _link_settings(self) -> dict[str, Any]:
        """The orchestrator's settings for links that cross hosts."""
        if self.tls is not None:
            return {"control_host": self.control_host, "tls": self.tls.orchestrator_tls()}
        if self.fleet is not None:
            return {"control_host": self.control_host, "insecure": True}
        return {}

    def _manager_link(self, host_id: str) -> dict[str, Any]:
        if self.tls is not None:
            files = self.tls.host_tls(host_id, self.host_address(host_id))
            return {"tls": {**files, "client_auth": self.engine_client_auth}}
        if self.fleet is not None:
            return {"insecure": True}
        return {}

    def host_address(self, host_id: str) -> str:
        """The host's own address: its namespace's, or loopback without a fleet."""
        if self.fleet is None:
            return "127.0.0.1"
        if host_id not in self.fleet.hosts:
            self.fleet.add_host(host_id)
        host = self.fleet.hosts[host_id]
        return host.address6 if self.ipv6 else host.address

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "LLORCH_JOIN_TOKEN": self.token, **self.env_extra}

    def start(self) -> Cluster:
        self.root.mkdir(parents=True, exist_ok=True)
        self.start_orchestrator()
        for host_id in self.pools:
            self.start_manager(host_id)
        self.wait_ready([p["id"] for pools in self.pools.values() for p in pools])
        return self

    def start_orchestrator(self, ports: dict[str, int] | None = None) -> None:
        """Start orchestratord on its state_dir; on `ports` (`http_port`, `control_port`)
        when given (a restart answers where clients and pool managers look), else on
        ports the kernel picks. Returns once it listens."""
        config = {
            "http_port": 0,
            "control_port": 0,
            "heartbeat_interval_ms": 300,
            "lease_ms": 1500,
            "suspect_ttl_ms": 3000,
            "disconnect_grace_ms": 500,
            "requeue_backoff_ms": 100,
            "state_dir": str(self.root / "orchestratord"),
            **self._link_settings(),
            **self.orchestrator,
            **(ports or {}),
        }
        (self.root / "orchestratord.yaml").write_text(yaml.safe_dump(config))
        ready = self.root / "orchestratord.ready"
        ready.unlink(missing_ok=True)
        self._spawn(
            "orchestratord",
            [
                sys.executable,
                "-m",
                "orchestratord",
                "--config",
                str(self.root / "orchestratord.yaml"),
                "--ready-file",
                str(ready),
            ],
        )
        listening = wait_for(
            lambda: ready.exists() and json.loads(ready.read_text()), "orchestratord to listen"
        )
        self.ports = {k: int(listening[k]) for k in ("http_port", "control_port")}
        self.url = f"http://127.0.0.1:{self.ports['http_port']}"
        self.control = host_port(self.control_host, self.ports["control_port"])

    # -- crashes, for the recovery tests and the chaos harness ------------------------------

    def kill(self, name: str) -> int:
        """SIGKILL a daemon this cluster started (`orchestratord`, `pool-managerd-<host>`)
        and reap it; its children (engines, workers) are left as a crash leaves them.
        Returns its pid."""
        process = self.processes[name]
        process.kill()
        process.wait()
        return process.pid

    def restart_manager(self, host_id: str) -> None:
        """Start a host's pool manager again on the same state_dir and config."""
        name = f"pool-managerd-{host_id}"
        assert self.processes[name].poll() is not None, f"{name} still runs"
        self.start_manager(host_id)

    def restart_orchestrator(self, sig: int = signal.SIGKILL, timeout_s: float = 30.0) -> int:
        """Stop the orchestrator with `sig` (SIGKILL: a crash; nothing when it has exited
        already, e.g. after `kill`) and start it again on the same state directory, config
        and ports; the old process's exit code."""
        process = self.processes["orchestratord"]
        process.send_signal(sig)  # Popen: no effect once the process has been reaped
        code = process.wait(timeout=timeout_s)
        self.start_orchestrator(self.ports)
        return code

    def start_manager(self, host_id: str) -> None:
        state = self.root / host_id
        manager = {
            "host_id": host_id,
            "orchestrator": self.control,
            "state_dir": str(state),
            "heartbeat_interval_ms": 300,
            "probe_interval_ms": 200,
            "shutdown_grace_s": 8,
            "pools": self.pools[host_id],
            "restart": {"initial_backoff_s": 0.3, "max_backoff_s": 2.0},
            "worker_threads": 1,
            **self._manager_link(host_id),
            **self.hosts.get(host_id, {}),
        }
        path = self.root / f"{host_id}.yaml"
        path.write_text(yaml.safe_dump(manager))
        argv = [sys.executable, "-m", "pool_managerd", "--config", str(path)]
        if self.fleet is not None:
            self.host_address(host_id)
            argv = self.fleet.command(host_id, argv)
        self._spawn(f"pool-managerd-{host_id}", argv)

    def _spawn(self, name: str, command: list[str]) -> None:
        log = (self.root / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            command, env=self.env, stdout=log, stderr=log, preexec_fn=die_with_parent
        )

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=httpx.Timeout(30.0), headers=self.headers)

    def pool(self, pool_id: str) -> dict[str, Any]:
        with self.client() as client:
            response = client.get(f"/v2/pools/{pool_id}")
            return dict(response.json()) if response.status_code == 200 else {}

    def wait_ready(self, pool_ids: list[str], timeout_s: float = WAIT_S) -> None:
        def ready() -> bool:
            with self.client() as client:
                pools = {p["pool_id"]: p for p in client.get("/v2/pools").json()["pools"]}
            return all(pools.get(i, {}).get("ready") for i in pool_ids)

        wait_for(ready, f"pools {pool_ids} to be ready", timeout_s)
        self.register_engine_keys()

    def worker_pids(self, host_id: str, pool_id: str) -> list[int]:
        return workers_under(self.root / host_id / "run" / f"{pool_id}-r")

    def stop_process(self, name: str, timeout_s: float = 30.0) -> int:
        return terminate(self.processes[name], timeout_s, name)

    def stop(self) -> dict[str, int]:
        self.register_engine_keys()
        codes = {}
        for name in sorted(self.processes, key=lambda n: n == "orchestratord"):
            codes[name] = self.stop_process(name)
        return codes

    def logs(self) -> str:
        parts = []
        for log in sorted(self.root.glob("*.log")):
            parts.append(f"==== {log.name}\n{log.read_text(errors='replace')[-6000:]}")
        return "\n".join(parts)

    # -- API helpers --------------------------------------------------------------------

    def submit(self, body: dict[str, Any], **headers: str) -> httpx.Response:
        with self.client() as client:
            return client.post("/v2/tasks", json=body, headers=headers)

    def events(self, task_id: str, last_event_id: int | None = None) -> list[Event]:
        headers = {} if last_event_id is None else {"Last-Event-ID": str(last_event_id)}
        with (
            self.client() as client,
            client.stream("GET", f"/v2/tasks/{task_id}/events", headers=headers) as response,
        ):
            assert response.status_code == 200, response.read()
            return list(parse_events(response.iter_lines()))

    def task(self, task_id: str) -> dict[str, Any]:
        with self.client() as client:
            return dict(client.get(f"/v2/tasks/{task_id}").json())

    def stream_pinned(self, pool_id: str, model: str = "default", **body: Any) -> list[Event]:
        """Submit a short job pinned to `pool_id` (PLC-02) and read its whole stream."""
        response = self.submit(pinned_job(model, pool_id, **body))
        assert response.status_code == 202, response.text
        return self.events(response.json()["task_id"])

    def cancel(self, task_id: str) -> int:
        with self.client() as client:
            return client.post(f"/v2/tasks/{task_id}/cancel").status_code


def pinned_job(model: str, pool_id: str, **body: Any) -> dict[str, Any]:
    """A task body pinned to one pool: 8 tokens unless `body` says otherwise."""
    return {
        "model": model,
        "prompt": "A job for one pool",
        "max_tokens": 8,
        "placement": {"pin_pool_id": pool_id},
        **body,
    }


def die_with_parent() -> None:
    """`preexec_fn`: the child gets SIGTERM when the test process dies, even by SIGKILL,
    so a crashed test run leaves no daemon behind (a pool manager stops its engines on
    SIGTERM). Kept across `ip netns exec`, which execs without a setuid bit."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def terminate(process: subprocess.Popen[Any], timeout_s: float = 30.0, name: str = "") -> int:
    """SIGTERM, then its exit code; SIGKILL and an AssertionError past `timeout_s`."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        what = name or repr(process.args)
        raise AssertionError(f"{what} did not stop within {timeout_s:.0f} s") from None


def workers_under(marker: Path | str) -> list[int]:
    """Pids of `llorch worker` processes whose command line names `marker` (a path, or
    the start of one: their port files live under their pool manager's state)."""
    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or ())
        if "worker_adapters.worker" in cmdline and str(marker) in cmdline:
            found.append(int(process.info["pid"]))
    return found


def tiny_pool(pool_id: str, model: Path, **overrides: Any) -> dict[str, Any]:
    """A pool-managerd pool entry for the tiny fixture model, answering to `default`."""
    return {
        "id": pool_id,
        "model": str(model),
        "engine": "llamacpp-inproc",
        "ctx": 16384,
        "slots": 1,
        "replicas": 1,
        "threads": 1,
        "aliases": ["default"],
        **overrides,
    }
