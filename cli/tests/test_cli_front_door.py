"""The CLI's front door (issue 14 item 1), without daemons: model references (hf: offline
is a typed error; a hub listing over a real local socket picks the file), the physical
core count for llama.cpp threads, the checks `up` makes before starting, the `ps`
table, log lines, `--url`/`--api-key` on every orchestrator command, `--version`, exit
codes in `--help`, and completion scripts that complete."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from catalog_core import write_tiny_model
from llorch import __main__ as cli
from llorch.api_key import auth_headers, resolve_connection
from llorch.completion import command_tree
from llorch.jobs import format_jobs
from llorch.model_ref import ModelRefError, classify, pick_gguf, resolve_hf_shorthand
from llorch.pool_ops import human_log_line
from llorch.run import deployment_name, served_names
from llorch.up_checks import engine_problem, model_problem, physical_cores, port_problem

CLIENT_COMMANDS = ["run", "ps", "cancel", "logs", "stop", "submit", "deploy", "pools", "hosts",
                   "chat", "caps"]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "kind", "normal"),
    [
        ("hf:ggml-org/gemma-3-270m-GGUF", "hf-shorthand", "hf:ggml-org/gemma-3-270m-GGUF"),
        ("hf:org/repo:Q8_0", "hf-shorthand", "hf:org/repo:Q8_0"),
        ("hf:org/repo/sub/model.gguf", "remote", "hf:org/repo/sub/model.gguf"),
        ("https://example.org/m.gguf", "remote", "https://example.org/m.gguf"),
        ("file:/models/m.gguf", "path", "/models/m.gguf"),
        ("/models/m.gguf", "path", "/models/m.gguf"),
        ("gemma-3-270m", "id", "gemma-3-270m"),
        ("default", "id", "default"),
    ],
)
def test_a_model_reference_is_classified_by_its_form(text: str, kind: str, normal: str) -> None:
    ref = classify(text)
    assert (ref.kind, ref.text) == (kind, normal)


def test_a_relative_path_is_made_absolute_and_a_malformed_hf_reference_is_a_usage_error() -> None:
    assert classify("models/m.gguf").text == str(Path.cwd() / "models/m.gguf")
    for bad in ("hf:just-org", "hf:", "  "):
        with pytest.raises(ModelRefError) as caught:
            classify(bad)
        assert caught.value.code == "INVALID_MODEL_REF"


def test_the_quantisation_picks_one_gguf_file_and_a_missing_one_is_model_not_found() -> None:
    files = ["README.md", "m-Q4_K_M.gguf", "m-Q8_0.gguf", "m-f16-00001-of-00002.gguf"]
    assert pick_gguf(files, "", "hf:o/r") == "m-Q4_K_M.gguf"
    assert pick_gguf(files, "q8_0", "hf:o/r") == "m-Q8_0.gguf"
    assert pick_gguf(["only.gguf"], "", "hf:o/r") == "only.gguf"
    with pytest.raises(ModelRefError) as caught:
        pick_gguf(files, "Q2_K", "hf:o/r:Q2_K")
    assert caught.value.code == "MODEL_NOT_FOUND" and "m-Q8_0.gguf" in str(caught.value)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_hf_offline_fails_with_a_typed_retryable_error_naming_the_hub(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(ModelRefError) as caught:
        resolve_hf_shorthand(classify("hf:ggml-org/gemma-3-270m-GGUF:Q8_0"), timeout_s=5)
    error = caught.value
    assert error.code == "SOURCE_UNREACHABLE" and error.retryable
    assert "cannot reach http://127.0.0.1" in error.reason


@pytest.fixture
def hub() -> Iterator[str]:
    """A hub API on a real local socket: one repository with three files."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/api/models/org/repo":
                self.send_error(404)
                return
            names = ["README.md", "repo-Q4_K_M.gguf", "repo-Q8_0.gguf"]
            body = json.dumps({"siblings": [{"rfilename": n} for n in names]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_hf_shorthand_resolves_to_one_file_by_listing_the_repository(
    hub: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", hub)
    assert resolve_hf_shorthand(classify("hf:org/repo:Q8_0")) == "hf:org/repo/repo-Q8_0.gguf"
    assert resolve_hf_shorthand(classify("hf:org/repo")) == "hf:org/repo/repo-Q4_K_M.gguf"
    with pytest.raises(ModelRefError) as caught:
        resolve_hf_shorthand(classify("hf:org/other"))
    assert caught.value.code == "MODEL_NOT_FOUND"


def test_up_with_hf_offline_exits_1_with_the_typed_error(tmp_path: Path) -> None:
    """`llorch up --model hf:ORG/REPO:QUANT` with the hub unreachable (as from this
    machine) fails at once, naming the reference and the code, and starts nothing."""
    env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{_closed_port()}"}
    done = subprocess.run(
        [sys.executable, "-m", "llorch", "up", "--model", "hf:org/repo:Q4_K_M", "--port", "0",
         "--state-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False, env=env,
    )  # fmt: skip
    assert done.returncode == 1 and "SOURCE_UNREACHABLE: hf:org/repo:Q4_K_M" in done.stderr
    assert not (tmp_path / "up" / "orchestratord.yaml").exists()


def test_physical_cores_count_distinct_cores_not_hyperthreads() -> None:
    topology = {  # two packages, two cores each, two threads per core
        cpu: {"physical_package_id": str(cpu // 4), "core_id": str((cpu // 2) % 2)}
        for cpu in range(8)
    }
    assert physical_cores(range(8), lambda cpu, name: topology[cpu][name]) == 4
    assert physical_cores([0, 1], lambda cpu, name: topology[cpu][name]) == 1
    assert physical_cores([0, 1, 2], lambda cpu, name: None) == 3  # no topology: each its own
    here = physical_cores(sorted(os.sched_getaffinity(0)))
    assert 1 <= here <= len(os.sched_getaffinity(0))


def test_up_checks_name_a_missing_or_corrupt_model_and_a_busy_port(tmp_path: Path) -> None:
    assert "does not exist" in model_problem(tmp_path / "missing.gguf")
    corrupt = tmp_path / "corrupt.gguf"
    corrupt.write_bytes(b"not a gguf file at all")
    assert "not a usable GGUF file" in model_problem(corrupt)
    assert model_problem(write_tiny_model(tmp_path / "tiny.gguf")) == ""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert "is in use" in port_problem("127.0.0.1", port, "the HTTP port (--port)")
    assert port_problem("127.0.0.1", 0, "x") == ""
    assert engine_problem() == ""
    assert "llama.cpp engine is missing" in engine_problem("no_such_llama_module")


def test_the_ps_table_shows_state_queue_position_tokens_and_owner() -> None:
    jobs: list[dict[str, Any]] = [
        {"task_id": "a1", "state": "running", "model": "tiny", "pool_id": "p1", "tokens_in": 3,
         "tokens_out": 40, "created_at_ms": 1_000, "owner": "alice", "queue_position": None},
        {"task_id": "b2", "state": "queued", "model": "tiny", "pool_id": None, "tokens_in": 0,
         "tokens_out": 0, "created_at_ms": 5_000, "owner": None, "queue_position": 1},
        {"task_id": "c3", "state": "failed", "model": "tiny", "pool_id": "p1", "tokens_in": 1,
         "tokens_out": 0, "created_at_ms": 0, "error_code": "ENGINE_ERROR"},
    ]  # fmt: skip
    rows = format_jobs(jobs, now_ms=11_000).splitlines()
    assert rows[0].split() == ["ID", "STATE", "MODEL", "POOL", "TOKENS", "IN/OUT", "AGE", "OWNER"]
    assert rows[1].split() == ["a1", "running", "tiny", "p1", "3/40", "10s", "alice"]
    assert rows[2].split() == ["b2", "queued", "#1", "tiny", "-", "0/0", "6s", "-"]
    assert rows[3].split()[:3] == ["c3", "failed", "ENGINE_ERROR"]
    assert format_jobs([], 0) == "no jobs"


def test_narration_log_lines_are_shown_as_time_level_text_and_others_as_written() -> None:
    line = json.dumps({"ts": "2026-12-07T00:00:00.000Z", "level": "info", "human": "ready"})
    assert human_log_line(line) == "2026-12-07T00:00:00.000Z info ready"
    assert human_log_line("llama_model_load: loaded") == "llama_model_load: loaded"


def test_run_names_its_deployment_and_sees_what_the_fleet_serves() -> None:
    assert deployment_name("hf:Org/Repo/Model-Q4_K_M.gguf") == "run-hf-org-repo-model-q4-k-m.gguf"
    caps = {"pools": [{"models": [{"id": "tiny", "aliases": ["default"]}]}]}
    assert served_names(caps) == {"tiny", "default"}


@pytest.mark.parametrize("command", CLIENT_COMMANDS)
def test_every_orchestrator_command_takes_url_and_api_key_from_flags_or_environment(
    command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    parser = cli.build_parser(command)
    extra = {"run": ["m"], "cancel": ["t"], "logs": ["p"], "stop": ["p"], "submit": ["x"],
             "deploy": ["ls"], "pools": ["ls"], "hosts": ["ls"]}.get(command, [])  # fmt: skip
    monkeypatch.setenv("LLORCH_URL", "http://from-env:1/")
    monkeypatch.setenv("LLORCH_API_KEY", "env-key")
    args = parser.parse_args([command, *extra])
    resolve_connection(args)
    assert args.url == "http://from-env:1"
    assert auth_headers(args) == {"Authorization": "Bearer env-key"}
    args = parser.parse_args([command, *extra, "--url", "http://flag:2", "--api-key", "k2"])
    resolve_connection(args)
    assert (args.url, auth_headers(args)) == ("http://flag:2", {"Authorization": "Bearer k2"})
    monkeypatch.delenv("LLORCH_URL")
    monkeypatch.delenv("LLORCH_API_KEY")
    args = parser.parse_args([command, *extra])
    resolve_connection(args)
    assert (args.url, auth_headers(args)) == ("http://127.0.0.1:8080", {})


def test_version_and_exit_codes_are_in_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(["--version"])
    assert caught.value.code == 0 and capsys.readouterr().out.startswith("llorch 0.")
    for argv in (["--help"], ["ps", "--help"]):
        with pytest.raises(SystemExit):
            cli.main(argv)
        out = capsys.readouterr().out
        assert "exit codes:" in out and "3  the orchestrator could not be reached" in out


def test_the_completion_tree_has_every_command_and_bash_completes_with_it() -> None:
    tree = command_tree(cli.build_parser())
    assert {"up", "run", "ps", "cancel", "logs", "stop", "completion"} <= set(tree[""].words)
    assert "drain" in tree["pools"].words and "--follow" in tree["logs"].options
    bash = shutil.which("bash")
    assert bash is not None
    script = subprocess.run(
        [sys.executable, "-m", "llorch", "completion", "bash"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    probe = (
        script
        + 'COMP_WORDS=(llorch pools dr); COMP_CWORD=2; _llorch_complete; echo "${COMPREPLY[@]}"\n'
    )
    assert (
        subprocess.run([bash, "-c", probe], capture_output=True, text=True, check=True).stdout
        == "drain\n"
    )
    for shell, marker in (("zsh", "bashcompinit"), ("fish", "complete -c llorch")):
        out = subprocess.run(
            [sys.executable, "-m", "llorch", "completion", shell],
            capture_output=True, text=True, check=True, timeout=60,
        ).stdout  # fmt: skip
        assert marker in out and "logs" in out


def test_provision_model_takes_every_reference_form_and_refuses_an_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    model = write_tiny_model(tmp_path / "tiny.gguf")
    state = ["--state-dir", str(tmp_path / "state")]
    argv = ["provision", "model", str(model), "--root", str(tmp_path), "--dry-run", *state]
    assert cli.main(argv) == 0
    assert f"plan for file:{model} -> tiny" in capsys.readouterr().out
    assert cli.main(["provision", "model", "tiny", *state]) == 2
    assert "INVALID_MODEL_REF: tiny" in capsys.readouterr().err
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    assert cli.main(["provision", "model", "hf:org/repo:Q8_0", *state]) == 1
    assert "SOURCE_UNREACHABLE: hf:org/repo:Q8_0" in capsys.readouterr().err


def test_a_phase_without_a_total_shows_its_state_and_time_on_a_terminal_only() -> None:
    from llorch.progress import Phase

    drawn = io.StringIO()
    phase = Phase("starting the pool", stream=drawn, enabled=True)
    phase.state("default loading")
    phase.close()
    assert "starting the pool: default loading [00:0" in drawn.getvalue()
    quiet = io.StringIO()
    phase = Phase("starting the pool", stream=quiet)
    phase.state("default loading")
    phase.close()
    assert quiet.getvalue() == ""


def test_loading_weights_shows_percent_and_an_eta_from_the_reported_fraction_on_a_tty() -> None:
    from llorch.progress import WeightsLoading, load_fraction

    pools: list[dict[str, object]] = [
        {"pool_id": "a", "state": "loading", "load_progress": 0.75},
        {"pool_id": "b", "state": "loading", "load_progress": 0.25},
        {"pool_id": "c", "state": "ready", "load_progress": None},
    ]
    assert load_fraction(pools) == 0.25  # the slowest loading pool
    unknown: list[dict[str, object]] = [{"pool_id": "c", "state": "loading", "load_progress": None}]
    assert load_fraction(unknown) is None
    drawn = io.StringIO()
    weights = WeightsLoading("loading the weights", stream=drawn, enabled=True)
    weights.update(None)  # nothing reported yet: nothing drawn
    assert drawn.getvalue() == ""
    seen_before = weights.seen
    weights.update(0.25)
    weights.update(0.5)
    assert drawn.getvalue() != "" and (seen_before, weights.seen) == (False, True)
    weights.close()
    text = drawn.getvalue()
    assert "loading the weights:  50%" in text and "50/100" in text
    assert "<" in text and "%/s" in text  # tqdm's elapsed<remaining (the ETA) and its rate
    quiet = io.StringIO()
    weights = WeightsLoading("loading the weights", stream=quiet)
    weights.update(0.5)
    weights.close()
    assert quiet.getvalue() == ""
