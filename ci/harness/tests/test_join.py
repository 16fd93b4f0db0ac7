"""`llorch join` on a second host joins the `llorch up` of the first (issue 10, FLT-01/02).

`llorch up --listen <bridge address>` runs in the root namespace and prints the join
command; a host certificate comes from `llorch certs host`; the printed command, run in
a network namespace of its own (a second machine as far as the network goes), starts a
pool manager that joins over TLS, and a job pinned to its pool streams to the end. A
join with a wrong token fails at once with the reason. Everything stops on SIGTERM with
exit code 0 and leaves no worker behind.
"""

from __future__ import annotations

import queue
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from ci_harness.cluster import die_with_parent, parse_events, pinned_job, terminate, workers_under
from ci_harness.fleet import Fleet, unavailable

pytestmark = pytest.mark.integration
WAIT_S = 60.0
LLORCH = [sys.executable, "-m", "llorch"]


class Output:
    """A process's merged stdout and stderr, line by line, read on a thread."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, args=(process,), daemon=True).start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.lines.put(line.rstrip("\n"))

    def until(self, wanted: str, timeout_s: float = WAIT_S) -> str:
        """The first line (from now) that contains `wanted`; fails on timeout or EOF."""
        while True:
            try:
                line = self.lines.get(timeout=timeout_s)
            except queue.Empty:
                raise AssertionError(f"no line with {wanted!r}; saw {self.seen}") from None
            self.seen.append(line)
            if wanted in line:
                return line


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    reason = unavailable()
    if reason:
        pytest.skip(f"no network namespaces here: {reason}")
    made = Fleet().start()
    try:
        yield made
    finally:
        made.close()


def start(argv: list[str]) -> tuple[subprocess.Popen[str], Output]:
    process = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=die_with_parent,
    )
    return process, Output(process)


def stop(process: subprocess.Popen[str]) -> int:
    return terminate(process, WAIT_S)


def logs(root: Path) -> str:
    """The last lines of every daemon log under `root`."""
    parts = []
    for log in sorted(root.rglob("*.log")):
        parts.append(f"==== {log}\n{log.read_text(errors='replace')[-4000:]}")
    return "\n".join(parts)


def stream_on(url: str, pool_id: str, model: str) -> list[Any]:
    body = pinned_job(model, pool_id, prompt="Joined across the bridge")
    with httpx.Client(base_url=url, timeout=30) as client:
        admitted = client.post("/v2/tasks", json=body)
        assert admitted.status_code == 202, admitted.text
        task_id = admitted.json()["task_id"]
        with client.stream("GET", f"/v2/tasks/{task_id}/events") as response:
            return list(parse_events(response.iter_lines()))


def test_llorch_join_in_a_second_namespace_joins_llorch_up_over_tls_and_serves_jobs(
    fleet: Fleet, tiny_model: Path, tmp_path: Path
) -> None:
    host = fleet.add_host("h2")
    intruder = fleet.add_host("h3")
    up_state, join_state = tmp_path / "up", tmp_path / "h2"
    up, up_out = start(
        [
            *LLORCH,
            "up",
            "--listen",
            fleet.gateway,
            "--model",
            str(tiny_model),
            "--port",
            "0",
            "--control-port",
            "0",
            "--threads",
            "1",
            "--state-dir",
            str(up_state),
        ]
    )
    joined: subprocess.Popen[str] | None = None
    try:
        url = up_out.until("llorch is up: ").split("llorch is up: ", 1)[1].strip()
        printed = shlex.split(up_out.until("llorch join "))
        assert printed[:2] == ["llorch", "join"] and printed[2].startswith(f"{fleet.gateway}:")
        assert (up_state / "join-token").stat().st_mode & 0o777 == 0o600
        assert (up_state / "tls" / "ca.key").stat().st_mode & 0o777 == 0o600

        issue = ["certs", "host", "h2", "--address", host.address, "--state-dir", str(up_state)]
        issued = subprocess.run(
            [*LLORCH, *issue],
            capture_output=True,
            text=True,
            timeout=WAIT_S,
            check=True,
        )
        hosts_dir = up_state / "tls" / "hosts"
        assert str(hosts_dir / "h2.pem") in issued.stdout
        assert (hosts_dir / "h2.key").stat().st_mode & 0o777 == 0o600
        extra = ["--model", str(tiny_model), "--host-id", "h2", "--pool-id", "pool-h2"]
        extra += ["--cert", str(hosts_dir / "h2.pem"), "--key", str(hosts_dir / "h2.key")]
        extra += ["--threads", "1", "--state-dir", str(join_state)]
        joined, join_out = start(fleet.command("h2", [*LLORCH, *printed[1:], *extra]))
        join_out.until("llorch: joined")
        join_out.until("ready: pool-h2")
        assert join_out.until("The fleet's API: ").strip().endswith(url)  # what up printed

        with httpx.Client(base_url=url, timeout=30) as client:
            hosts = {h["host_id"]: h for h in client.get("/v2/hosts").json()["hosts"]}
        assert hosts["h2"]["link"] == "tls" and hosts["h2"]["address"] == host.address
        events = stream_on(url, "pool-h2", "tiny")  # its catalog id
        assert events[0].name == "started" and events[0].data["pool_id"] == "pool-h2"
        assert events[-1].name == "end" and any(e.name == "token" for e in events), events

        wrong = [*printed[1:], *extra[:-1], str(tmp_path / "h3")]
        wrong[wrong.index("--token") + 1] = "not-the-token"
        wrong[wrong.index("--host-id") + 1] = "h3"
        refused = subprocess.run(
            fleet.command(intruder.host_id, [*LLORCH, *wrong]),
            capture_output=True,
            text=True,
            timeout=WAIT_S,
        )
        assert refused.returncode == 1, refused.stderr
        assert "join failed" in refused.stderr and "join token" in refused.stderr, refused.stderr
        assert not workers_under(tmp_path / "h3")
    except BaseException:
        print(logs(tmp_path))  # shown by pytest with the failure
        raise
    finally:
        codes = {"join": stop(joined) if joined else 0, "up": stop(up)}
    assert codes == {"join": 0, "up": 0}
    assert not workers_under(tmp_path), "worker processes survived their pool manager"
    token = (up_state / "join-token").read_text().strip()
    for log in tmp_path.rglob("*.log"):
        assert token not in log.read_text(errors="replace"), f"{log} holds the join token"
    for config in tmp_path.rglob("*.yaml"):
        assert token not in config.read_text(), f"{config} holds the join token"
