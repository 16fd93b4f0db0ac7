"""A new user's walk-through of the `llorch` CLI on real processes (issue 14 acceptance):
`up` on the tiny fixture model, `ps` during a job, `logs`, `cancel`, `run` against the
catalog id and `run URL` (fetched, loaded as a deployment, answered), `stop`; a bad
config file gives one line naming it; `up --model missing.gguf` exits non-zero within
5 s with the reason."""

from __future__ import annotations

import json
import os
import pty
import queue
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from catalog_core import TinyModelSpec, write_tiny_model
from ci_harness.cluster import wait_for
from llorch.up_checks import physical_cores
from provisioners.testing import RangeFileServer

pytestmark = pytest.mark.integration


def _llorch(
    *argv: str, stdin: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LLORCH_URL", "LLORCH_API_KEY")}
    return subprocess.run(
        [sys.executable, "-m", "llorch", *argv],
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )


def _lines(stream: object, sink: queue.Queue[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        sink.put(line.rstrip("\n"))


def _url_from(lines: queue.Queue[str], up: subprocess.Popen[str]) -> tuple[str, list[str]]:
    deadline = time.monotonic() + 240
    seen: list[str] = []
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            assert up.poll() is None, f"llorch up exited: {seen}"
            continue
        seen.append(line)
        if line.startswith("llorch is up: "):
            return line.removeprefix("llorch is up: ").strip(), seen
    raise AssertionError(f"llorch up was not ready: {seen}")


def _chat_on_a_terminal(connect: list[str]) -> int:
    """`llorch run tiny` on a pseudo-terminal: it prompts `you> `, answers a line, prompts
    again, and `/exit` ends it; its exit code."""
    controller, terminal = pty.openpty()
    chat = subprocess.Popen(
        [sys.executable, "-m", "llorch", "run", "tiny", *connect, "--max-tokens", "4"],
        stdin=terminal, stdout=terminal, stderr=terminal,
    )  # fmt: skip
    os.close(terminal)
    seen = b""

    def read_until_prompts(count: int) -> None:
        nonlocal seen
        deadline = time.monotonic() + 60
        while seen.count(b"you> ") < count:
            assert time.monotonic() < deadline, seen
            ready, _, _ = select.select([controller], [], [], 1)
            if ready:
                seen += os.read(controller, 4096)

    try:
        read_until_prompts(1)
        os.write(controller, b"Hello there\n")
        read_until_prompts(2)  # answered, and asking again
        os.write(controller, b"/exit\n")
        return chat.wait(timeout=30)
    finally:
        if chat.poll() is None:
            chat.kill()
            chat.wait()
        os.close(controller)


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_a_new_users_walk_through_up_ps_logs_cancel_run_stop(
    tmp_path: Path, tiny_model: Path
) -> None:
    up = subprocess.Popen(
        [sys.executable, "-m", "llorch", "up", "--model", str(tiny_model), "--port", "0",
         "--ctx", "16384", "--state-dir", str(tmp_path / "state")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_lines, args=(up.stdout, lines), daemon=True).start()
    submit: subprocess.Popen[str] | None = None
    try:
        url, printed = _url_from(lines, up)
        connect = ["--url", url]
        cores = physical_cores(sorted(os.sched_getaffinity(0)))
        assert any(f"{cores} llama.cpp threads per slot" in line for line in printed), printed
        # a long job, streamed by `llorch submit`
        submit = subprocess.Popen(
            [sys.executable, "-m", "llorch", "submit", *connect, "--max-tokens", "16000", "x"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

        def running() -> list[dict[str, object]]:
            listed = _llorch("ps", *connect, "--json")
            assert listed.returncode == 0, listed.stderr
            return [job for job in json.loads(listed.stdout) if job["state"] == "running"]

        job = wait_for(running, "llorch ps to show the job running", 60)[0]
        table = _llorch("ps", *connect)
        assert table.returncode == 0 and table.stdout.split("\n")[0].split()[:2] == ["ID", "STATE"]
        assert any(
            row.split()[:2] == [job["task_id"], "running"] for row in table.stdout.splitlines()
        )
        assert job["pool_id"] == "default"

        logs = _llorch("logs", "default", *connect)
        assert logs.returncode == 0, logs.stderr
        assert len(logs.stdout.strip().splitlines()) >= 1
        follow = subprocess.Popen(
            [sys.executable, "-m", "llorch", "logs", "default", "-f", *connect],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            # As from a terminal: Ctrl-C's default action, whatever this process inherited
            # (an ignored SIGINT is inherited across exec, and Python then keeps ignoring it).
            preexec_fn=_sigint_default,
        )  # fmt: skip
        assert follow.stdout is not None
        first_line = follow.stdout.readline()  # what is there already, then it keeps going
        assert first_line.strip() and follow.poll() is None
        follow.send_signal(signal.SIGINT)
        _, follow_err = follow.communicate(timeout=30)  # drains both pipes while it exits
        assert follow.returncode == 130, follow_err[-2000:]

        cancel = _llorch("cancel", str(job["task_id"]), *connect)
        assert (cancel.returncode, cancel.stdout.strip()) == (0, f"{job['task_id']}: cancelled")
        _, submit_err = submit.communicate(timeout=30)
        assert submit.returncode == 1 and "CANCELLED" in submit_err
        assert _llorch("ps", *connect, "--json").stdout.strip() == "[]"
        ended = json.loads(_llorch("ps", *connect, "-a", "--json").stdout)
        assert [(j["task_id"], j["state"]) for j in ended] == [(job["task_id"], "cancelled")]
        unknown = _llorch("cancel", "no-such-job", *connect)
        assert unknown.returncode == 1 and "NOT_FOUND" in unknown.stderr

        # `run` against the catalog id (the file tiny.gguf is `tiny`), prompt on stdin
        answer = _llorch("run", "tiny", *connect, "--max-tokens", "8", stdin="Hello there")
        assert answer.returncode == 0, answer.stderr
        assert _chat_on_a_terminal(connect) == 0

        missing = _llorch("run", "no-such-model", *connect, "--pending-timeout", "2", stdin="hi")
        assert missing.returncode == 1 and "no-such-model" in missing.stderr

        # `run URL`: fetched into the catalog, loaded as a deployment, answered
        other = write_tiny_model(tmp_path / "other.gguf", TinyModelSpec())
        with RangeFileServer({"other.gguf": other.read_bytes()}) as files:
            fetched = _llorch(
                "run", files.url("other.gguf"), "Hello", *connect, "--max-tokens", "8",
                "--ctx", "2048", "--state-dir", str(tmp_path / "state"), timeout=300,
            )  # fmt: skip
        assert fetched.returncode == 0, fetched.stderr
        assert "llorch: register" in fetched.stderr  # narrated steps, no bar (not a terminal)
        deployed = _llorch("deploy", "show", "run-other", *connect, "--json")
        assert json.loads(deployed.stdout)[0]["phase"] == "ready"

        stop = _llorch("stop", "default", *connect, "--deadline-ms", "0")
        assert stop.returncode == 0 and "default: stopped" in stop.stdout, stop.stderr
    finally:
        if submit is not None and submit.poll() is None:
            submit.kill()
            submit.wait()
        up.send_signal(signal.SIGINT)
        up.wait(timeout=60)
    assert up.returncode == 0


def test_a_bad_config_file_is_refused_with_a_line_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "deployments.yaml"
    bad.write_text("name: chat\nmodel: [tiny\n")
    applied = _llorch("deploy", "apply", str(bad), "--url", "http://127.0.0.1:9")
    assert applied.returncode == 2
    assert applied.stderr.count("\n") == 1 and str(bad) in applied.stderr
    manager = tmp_path / "pool-managerd.yaml"
    manager.write_text("host_id: [unclosed\n")
    started = subprocess.run(
        [sys.executable, "-m", "pool_managerd", "--config", str(manager)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert started.returncode != 0 and str(manager) in started.stderr


def test_up_with_a_missing_model_exits_within_5_s_with_the_reason(tmp_path: Path) -> None:
    started = time.monotonic()
    done = _llorch("up", "--model", "missing.gguf", "--port", "0", "--state-dir", str(tmp_path))
    elapsed = time.monotonic() - started
    assert done.returncode == 2 and elapsed < 5.0, (done.returncode, elapsed)
    assert "missing.gguf does not exist" in done.stderr


def test_up_on_a_busy_port_or_a_corrupt_model_exits_within_5_s_with_the_reason(
    tmp_path: Path, tiny_model: Path
) -> None:
    corrupt = tmp_path / "corrupt.gguf"
    corrupt.write_bytes(b"GGUF but not really")
    started = time.monotonic()
    done = _llorch("up", "--model", str(corrupt), "--port", "0", "--state-dir", str(tmp_path))
    assert done.returncode == 2 and time.monotonic() - started < 5.0
    assert f"model file {corrupt} is not a usable GGUF file" in done.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        started = time.monotonic()
        argv = ["up", "--model", str(tiny_model), "--port", port, "--state-dir", str(tmp_path)]
        done = _llorch(*argv)
        assert done.returncode == 1 and time.monotonic() - started < 5.0
    assert f"127.0.0.1:{port} is in use" in done.stderr
