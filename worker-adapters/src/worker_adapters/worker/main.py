"""Running a worker process: bind, report the port, load, serve, stop on a signal.

Order matters for readiness (POOL-02): the gRPC server starts before the model loads,
so `Health` answers `loading` while the weights load and the pool manager can tell a
slow load from a dead process. The bound port is written to `port_file` (atomically,
via rename) once the server listens; the pool manager waits for that file.

TLS (FLT-02): with `--tls-cert/--tls-key` the gRPC server serves TLS with the host's
certificate; `--tls-client-ca` also requires a client certificate from that CA (the
orchestrator's, and the pool manager's for its probes). The key file is read once at
start; its path, not its content, is on the command line.

Signals: SIGTERM and SIGINT stop accepting calls, give in-flight streams `grace_s` to
finish, then exit 0. A model that fails to load exits 3 (the pool manager reports the
error from the log).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from specs.net import host_port
from specs.tracing import TracingConfigError, setup_tracing
from specs.worker.v1 import worker_pb2_grpc

from worker_adapters.engine import EngineBackend
from worker_adapters.mock import MockBackend, MockKnobs
from worker_adapters.worker.server import WorkerServicer

__all__ = ["API_KEY_ENV", "EXIT_LOAD_FAILED", "WorkerOptions", "build_parser", "main", "run_worker"]

EXIT_LOAD_FAILED = 3
API_KEY_ENV = "LLORCH_WORKER_API_KEY"


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    model: Path | None
    engine: str = "llamacpp"
    host: str = "127.0.0.1"
    port: int = 0
    port_file: Path | None = None
    ctx: int = 2048
    slots: int = 1
    threads: int | None = None
    gpu_layers: int = 0
    embeddings: bool = False
    mock: str = ""
    grace_s: float = 5.0
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None


def _backend(options: WorkerOptions, incarnation: int) -> EngineBackend:
    if options.engine == "mock":
        knobs = MockKnobs(ctx=options.ctx, slots=options.slots).with_directive(
            f"[[mock {options.mock}]]"
        )
        return MockBackend(knobs, incarnation=incarnation)
    if options.model is None:
        raise SystemExit(f"llorch worker: --model is required for the {options.engine} engine")
    if options.engine == "vllm":  # imports vLLM: the vllm-inproc engine venv's python only
        try:
            from worker_adapters.vllm_inproc.backend import VllmBackend, VllmSettings
        except ImportError as exc:
            raise SystemExit(
                f"llorch worker: the vllm engine needs vLLM, which {sys.executable} cannot "
                f"import ({exc}); run the worker with the python of the vllm-inproc engine "
                "venv (`llorch provision engine vllm-inproc:package`)"
            ) from exc

        vllm_settings = VllmSettings(options.model, ctx=options.ctx, slots=options.slots)
        return VllmBackend(vllm_settings, incarnation=incarnation)
    from worker_adapters.llamacpp_inproc import LlamaBackend, LlamaSettings

    settings = LlamaSettings(
        model_path=options.model,
        ctx=options.ctx,
        slots=options.slots,
        threads=options.threads,
        gpu_layers=options.gpu_layers,
        embeddings=options.embeddings,
    )
    return LlamaBackend(settings, incarnation=incarnation)


def _write_port(path: Path, port: int) -> None:
    scratch = path.with_suffix(path.suffix + ".tmp")
    scratch.write_text(f"{port}\n")
    scratch.replace(path)


def _bind(server: grpc.aio.Server, options: WorkerOptions) -> int:
    address = host_port(options.host, options.port)
    if options.tls_cert is None or options.tls_key is None:
        return server.add_insecure_port(address)
    client_ca = options.tls_client_ca.read_bytes() if options.tls_client_ca else None
    credentials = grpc.ssl_server_credentials(
        [(options.tls_key.read_bytes(), options.tls_cert.read_bytes())],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )
    return server.add_secure_port(address, credentials)


async def _serve(options: WorkerOptions) -> int:
    incarnation = time.time_ns()
    backend = _backend(options, incarnation)
    server = grpc.aio.server(options=(("grpc.so_reuseport", 0),))
    servicer = WorkerServicer(backend, os.environ.pop(API_KEY_ENV, ""))
    worker_pb2_grpc.add_WorkerServicer_to_server(servicer, server)
    port = _bind(server, options)
    await server.start()
    if options.port_file is not None:
        _write_port(options.port_file, port)
    secured = " (TLS)" if options.tls_cert else ""
    where = host_port(options.host, port)
    print(f"llorch worker listening on {where}{secured}", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await backend.start()
    except Exception as exc:  # noqa: BLE001 - any load failure is reported and ends the process
        print(f"llorch worker: model load failed: {exc}", file=sys.stderr, flush=True)
        await server.stop(0)
        return EXIT_LOAD_FAILED
    print("llorch worker ready", file=sys.stderr, flush=True)
    await stop.wait()
    await server.stop(options.grace_s)
    await backend.close()
    return 0


def run_worker(options: WorkerOptions) -> int:
    """Serve until SIGTERM/SIGINT; returns the process exit code."""
    return asyncio.run(_serve(options))


def build_parser(prog: str = "llorch worker") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Serve one model with an in-process engine over gRPC (WRK-01)."
    )
    parser.add_argument(
        "--model", type=Path, help="GGUF model file (llamacpp), Hugging Face model folder (vllm)"
    )
    parser.add_argument("--engine", choices=("llamacpp", "vllm", "mock"), default="llamacpp")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--port-file", type=Path, help="write the bound port here")
    parser.add_argument("--ctx", type=int, default=2048, help="context per slot, in tokens")
    parser.add_argument("--slots", type=int, default=1, help="concurrent sequences")
    parser.add_argument("--threads", type=int, help="CPU threads per slot")
    parser.add_argument("--gpu-layers", type=int, default=0)
    parser.add_argument("--embeddings", action="store_true", help="also serve embeddings")
    parser.add_argument("--mock", default="", help="mock knobs, e.g. 'token_delay_ms=5'")
    parser.add_argument("--grace", type=float, default=5.0, help="seconds to finish streams")
    parser.add_argument("--tls-cert", type=Path, help="serve TLS with this certificate (PEM)")
    parser.add_argument("--tls-key", type=Path, help="the certificate's private key (PEM)")
    parser.add_argument("--tls-client-ca", type=Path, help="require client certificates from it")
    return parser


def main(argv: list[str] | None = None, prog: str = "llorch worker") -> int:
    """Entry point of `llorch worker` and `python -m worker_adapters.worker`.

    The per-pool API key, if any, is read from the environment variable
    LLORCH_WORKER_API_KEY (never from the command line, which other users can read).
    """
    args = build_parser(prog).parse_args(argv)
    if args.slots < 1 or args.ctx < 16:
        print(f"{prog}: --slots must be >= 1 and --ctx >= 16", file=sys.stderr)
        return 2
    try:
        setup_tracing("llorch-worker")  # OBS-03: off unless the environment turns it on
    except TracingConfigError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    options = WorkerOptions(
        model=args.model,
        engine=args.engine,
        host=args.host,
        port=args.port,
        port_file=args.port_file,
        ctx=args.ctx,
        slots=args.slots,
        threads=args.threads,
        gpu_layers=args.gpu_layers,
        embeddings=args.embeddings,
        mock=args.mock,
        grace_s=args.grace,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
    )
    if (options.tls_cert is None) != (options.tls_key is None):
        print(f"{prog}: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    return run_worker(options)
