"""`llorch join ADDR --token TOKEN`: this host joins an orchestrator that runs elsewhere.

    llorch join 10.0.0.1:8090 --token T --ca ca.pem [--cert h.pem --key h.key]
                [--model m.gguf | --config pool-managerd.yaml] [--host-id ID] ...

One command starts a pool manager (issue 10, FLT-01/02) in the foreground, as `llorch up`
does: with one `llamacpp-inproc` pool on `--model` (pool id `<host-id>-<model id>`,
answering to the model's catalog id), or with the pools of a pool-managerd YAML given by
`--config`, where the join flags fill in only what the file leaves out. The YAML it runs
is written to `<state-dir>/join/pool-managerd.yaml`; the token goes to the pool manager
in its environment (`LLORCH_JOIN_TOKEN`, or the file's `join_token_env`), never in argv,
a file or a log. Progress comes from the pool manager's `status_file` (joined, each
pool's state) and its log: it says when the link is up, each pool's state as it
changes, and when every pool is ready; then it runs until Ctrl-C or SIGTERM, which stop
the pool manager and with it every engine.

A link that leaves this machine is TLS: `--ca` verifies the orchestrator (the system's
roots without it) and `--cert/--key` (from `llorch certs host` on the orchestrator's
machine) is this host's identity, presented on the control link and served by its
engines. Without a host certificate the engines would serve plaintext, so such a join
needs `--insecure`, as does a plaintext control link.

A join that cannot succeed does not hang: a refused token or a refused pool ends it at
once, any other failure (an unreachable orchestrator, a refused TLS handshake) after
`--join-timeout` seconds without a link; each prints the pool manager's last error line.

Exit codes: 0 after a clean stop; 1 the join failed or the pool manager died; 2 usage.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from specs.net import AddressError, host_port, is_loopback, split_host_port

from llorch.daemons import LogTail, last_problem, problem_line, record_of, stop
from llorch.state import default_state_dir

__all__ = ["JoinFailed", "Status", "add_parser", "manager_settings", "narrate", "run"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
_DEFAULT_CONTROL_PORT = 8090
_READY_TIMEOUT_S = 600.0
_POLL_S = 0.1
_STOP_TIMEOUT_S = 30.0
_ID = re.compile(r"[^A-Za-z0-9._-]+")


class JoinFailed(Exception):
    """The join cannot succeed; the message is the reason to show."""


class _Interrupted(Exception):
    """Ctrl-C or SIGTERM: stop the pool manager and exit."""


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("join", help="join this host to an orchestrator elsewhere")
    parser.add_argument("address", help="the orchestrator's control link, HOST:PORT")
    parser.add_argument("--token", help="the join token (default: $LLORCH_JOIN_TOKEN)")
    parser.add_argument("--ca", type=Path, help="the CA that signed the orchestrator's certificate")
    parser.add_argument("--cert", type=Path, help="this host's certificate (llorch certs host)")
    parser.add_argument("--key", type=Path, help="its private key")
    parser.add_argument("--insecure", action="store_true", help="allow plaintext links")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", type=Path, help="serve this GGUF file in one pool")
    source.add_argument("--config", type=Path, help="a pool-managerd YAML to run")
    parser.add_argument("--host-id", help="this host's id (default: its hostname)")
    parser.add_argument("--advertise-host", help="the address the orchestrator dials here")
    parser.add_argument("--pool-id", help="default: HOST_ID-MODEL_ID")
    parser.add_argument("--state-dir", type=Path, help="default: $LLORCH_STATE_DIR")
    parser.add_argument("--threads", type=int, help="CPU threads of the pool's engine")
    parser.add_argument("--ctx", type=int, default=4096, help="tokens per slot")
    parser.add_argument("--slots", type=int, default=1, help="concurrent sequences")
    parser.add_argument(
        "--join-timeout",
        type=float,
        default=30.0,
        help="seconds to wait for the link before giving up (default 30)",
    )
    parser.set_defaults(handler=run)


# -- the pool manager's configuration --------------------------------------------------------


def _orchestrator_address(text: str) -> str:
    """`host:port` of the orchestrator; a bare host gets the default control port."""
    try:
        host, port = split_host_port(text)
    except AddressError:
        if ":" in text.strip("[]") and not text.startswith("["):
            raise
        return host_port(text, _DEFAULT_CONTROL_PORT)
    return host_port(host, port)


def _slug(text: str) -> str:
    return _ID.sub("-", text).strip("-")[:64] or "host"


def _pool(args: argparse.Namespace, host_id: str) -> dict[str, Any]:
    from catalog_core.model_id import model_id_for

    model = args.model.expanduser().resolve()
    if not model.is_file():
        raise JoinFailed(f"--model {args.model}: no such file")
    model_id = model_id_for(model)
    pool: dict[str, Any] = {
        "id": args.pool_id or _slug(f"{host_id}-{model_id}"),
        "model": str(model),
        "aliases": [model_id],
        "engine": "llamacpp-inproc",
        "ctx": args.ctx,
        "slots": args.slots,
    }
    if args.threads:
        pool["threads"] = args.threads
    return pool


def _tls(args: argparse.Namespace) -> dict[str, str]:
    if (args.cert is None) != (args.key is None):
        raise JoinFailed("--cert and --key go together")
    files = {"ca_file": args.ca, "cert_file": args.cert, "key_file": args.key}
    return {name: str(path.expanduser().resolve()) for name, path in files.items() if path}


def _base(args: argparse.Namespace) -> dict[str, Any]:
    if args.config is None:
        return {}
    try:
        loaded = yaml.safe_load(args.config.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise JoinFailed(f"--config {args.config}: {exc}") from exc
    if not isinstance(loaded, dict):
        raise JoinFailed(f"--config {args.config}: expected a mapping")
    return loaded


def manager_settings(args: argparse.Namespace, join_dir: Path) -> dict[str, Any]:
    """The pool manager's YAML: `--config`'s settings (or one pool on `--model`), with the
    join flags filling in only what is not set there."""
    settings = _base(args)
    host_id = args.host_id or settings.get("host_id") or _slug(socket.gethostname())
    fill: dict[str, Any] = {
        "orchestrator": _orchestrator_address(args.address),
        "host_id": host_id,
        "state_dir": str(join_dir),
        "status_file": str(join_dir / "status.json"),
    }
    if args.advertise_host:
        fill["advertise_host"] = args.advertise_host
    if args.insecure:
        fill["insecure"] = True
    tls = _tls(args)
    if tls:
        fill["tls"] = tls
    if args.model is not None:
        fill["pools"] = [_pool(args, str(host_id))]
    for name, value in fill.items():
        if settings.get(name) in (None, "", []):
            settings[name] = value
    return settings


def _host_tls(settings: dict[str, Any]) -> dict[str, Any]:
    tls = settings.get("tls")
    return tls if isinstance(tls, dict) else {}


def _check_link(settings: dict[str, Any]) -> str:
    """Why these settings would send secrets or prompts in plaintext across the network
    without `insecure: true` ("" when they would not)."""
    host, _ = split_host_port(str(settings["orchestrator"]))
    if is_loopback(host) or settings.get("insecure") or _host_tls(settings).get("cert_file"):
        return ""
    return (
        "no host certificate: this host's engines would serve plaintext across the network. "
        "On the orchestrator's machine run `llorch certs host HOST_ID --address "
        "THIS_HOST_ADDRESS`, copy the files it names here and pass --cert/--key "
        "(or pass --insecure)"
    )


def _insecure_note(settings: dict[str, Any]) -> str:
    """The warning for engines that serve plaintext off this machine ("" when they don't).
    The pool manager warns about a plaintext control link itself."""
    host, _ = split_host_port(str(settings["orchestrator"]))
    if is_loopback(host) or not settings.get("insecure") or _host_tls(settings).get("cert_file"):
        return ""
    return "INSECURE: this host's engines serve plaintext to the orchestrator (no --cert/--key)"


# -- watching it -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Status:
    """The pool manager's `status_file`."""

    joined: bool = False
    pools: dict[str, str] = field(default_factory=dict)
    api_url: str = ""  # the fleet's API, as the orchestrator announced it

    @classmethod
    def read(cls, path: Path) -> Status | None:
        try:
            raw = json.loads(path.read_text())
            pools = {str(k): str(v) for k, v in raw["pools"].items()}
            return cls(bool(raw["joined"]), pools, str(raw.get("api_url") or ""))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None  # not written yet

    @property
    def ready(self) -> bool:
        """Joined, and every static pool ready (the file lists them all from its first
        write; a host with none serves deployments' pools once joined)."""
        return self.joined and all(state == "ready" for state in self.pools.values())


def narrate(before: Status, now: Status, address: str) -> list[str]:
    """Progress lines for what changed between two statuses."""
    lines = []
    if now.joined != before.joined:
        lines.append(f"joined {address}" if now.joined else f"lost the link to {address}")
    for pool_id, state in sorted(now.pools.items()):
        if before.pools.get(pool_id) != state:
            lines.append(f"pool {pool_id} {state}")
    return lines


def _fatal(line: str) -> str:
    """The reason a start-up log line ends the join ("" when it does not): the token
    refused (logged as an error by the control link) or a pool refused."""
    record = record_of(line)
    if record.get("level") != "error":
        return ""
    if record.get("action") in ("dial", "refused"):
        return str(record.get("human", ""))
    return ""


@dataclass
class _Watch:
    process: subprocess.Popen[bytes]
    status_file: Path
    log: LogTail
    address: str
    status: Status = field(default_factory=Status)
    log_start: int = 0
    said: str = ""  # the last problem line shown

    def step(self, starting: bool) -> Status:
        """Say what changed; JoinFailed when the pool manager died or, while `starting`,
        when it logged a refusal or a pool failed."""
        for line in self.log.read():
            reason = _fatal(line) if starting else ""
            if reason:
                raise JoinFailed(reason)
            problem = problem_line(line)
            if problem and problem != self.said:  # a redial failing alike says it once
                _say(f"pool-managerd: {problem}")
                self.said = problem
        if self.process.poll() is not None:
            raise JoinFailed(
                f"the pool manager exited ({self.process.returncode}): {self.last_problem()}"
            )
        now = Status.read(self.status_file) or self.status
        for line in narrate(self.status, now, self.address):
            _say(line)
        self.status = now
        failed = [p for p, state in now.pools.items() if state == "failed"]
        if starting and failed:
            raise JoinFailed(f"pool {failed[0]} failed: {self.last_problem()}")
        return now

    def last_problem(self) -> str:
        return last_problem(self.log.path, self.log_start) or f"see {self.log.path}"

    def until_ready(self, join_timeout_s: float) -> None:
        started = time.monotonic()
        while not self.step(starting=True).ready:
            waited = time.monotonic() - started
            if not self.status.joined and waited > join_timeout_s:
                raise JoinFailed(
                    f"no link to {self.address} within {join_timeout_s:.0f} s: "
                    f"{self.last_problem()}"
                )
            if waited > _READY_TIMEOUT_S:
                raise JoinFailed(f"the pools were not ready within {_READY_TIMEOUT_S:.0f} s")
            time.sleep(_POLL_S)


def _say(line: str) -> None:
    print(f"llorch: {line}", file=sys.stderr, flush=True)


# -- the command -----------------------------------------------------------------------------


def _prepare(args: argparse.Namespace) -> tuple[Path, dict[str, Any], str]:
    """(join folder, pool manager settings, token), or JoinFailed for a usage error."""
    token = args.token or os.environ.get("LLORCH_JOIN_TOKEN", "")
    if not token:
        raise JoinFailed(
            "no join token: pass --token (printed by llorch up) or set LLORCH_JOIN_TOKEN"
        )
    state_dir = (args.state_dir or default_state_dir()).expanduser().resolve()
    join_dir = state_dir / "join"
    try:
        settings = manager_settings(args, join_dir)
        _check_types(settings, str(args.config) if args.config else "llorch join")
        problem = _check_link(settings)
    except AddressError as exc:
        raise JoinFailed(f"{args.address}: {exc}") from exc
    if problem:
        raise JoinFailed(problem)
    return join_dir, settings, token


def _check_types(settings: dict[str, Any], source: str) -> None:
    """The pool manager's file checked before it starts: a typo or a wrong type in
    `--config` is one line naming that file and the key, at once."""
    from pool_managerd.config_schema import ManagerSettings  # only `join` needs it
    from specs.settings import SettingsError, validate_file

    try:
        validate_file(ManagerSettings, settings, source)
    except SettingsError as exc:
        raise JoinFailed(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    try:
        join_dir, settings, token = _prepare(args)
    except JoinFailed as exc:
        print(f"llorch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if note := _insecure_note(settings):
        _say(note)
    (join_dir / "logs").mkdir(parents=True, exist_ok=True)
    config = join_dir / "pool-managerd.yaml"
    config.write_text(yaml.safe_dump(settings))
    status_file = Path(settings["status_file"]).expanduser()
    status_file.unlink(missing_ok=True)
    log_file = join_dir / "logs" / "pool-managerd.log"
    token_env = str(settings.get("join_token_env") or "LLORCH_JOIN_TOKEN")
    env = {**os.environ, token_env: token, "LLORCH_LOG_FORMAT": "json"}
    address = str(settings["orchestrator"])

    def on_signal(signum: int, frame: object) -> None:
        raise _Interrupted

    # Restored on the way out: a caller (a test, a script) keeps its own handling.
    previous = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    children: list[subprocess.Popen[bytes]] = []
    code, ready = EXIT_FAILED, False
    try:
        tail = LogTail.at_end(log_file)
        with log_file.open("ab") as log:
            argv = [sys.executable, "-m", "pool_managerd", "--config", str(config)]
            children.append(subprocess.Popen(argv, env=env, stdout=log, stderr=log))
        _say(f"joining {address} as host {settings['host_id']}; log in {log_file}")
        watch = _Watch(children[0], status_file, tail, address, log_start=tail.offset)
        watch.until_ready(args.join_timeout)
        pools = ", ".join(sorted(watch.status.pools)) or "no static pools"
        print(f"\nllorch: host {settings['host_id']} joined {address}; ready: {pools}", flush=True)
        if watch.status.api_url:
            print(f"The fleet's API: {watch.status.api_url}", flush=True)
        print("Stop with Ctrl-C.\n", flush=True)
        ready = True
        while True:
            watch.step(starting=False)
            time.sleep(_POLL_S)
    except _Interrupted:
        code = EXIT_OK
    except JoinFailed as exc:
        _say(f"{exc}" if ready else f"join failed: {exc}")
    except OSError as exc:
        _say(str(exc))
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            codes = stop(children, _STOP_TIMEOUT_S)
        finally:
            signal.signal(signal.SIGTERM, previous[0])
            signal.signal(signal.SIGINT, previous[1])
    if code == EXIT_OK and any(codes):
        _say(f"the pool manager exited with {codes[0]}; see {log_file}")
        return EXIT_FAILED
    if code == EXIT_OK:
        _say("stopped")
    return code
