"""Composition root: builds the registry, the adapter host, the orchestrator, the HTTP
app and the control-link server, and keeps adapter bindings in step with the registry.

`serve(config)` runs everything in one event loop until SIGTERM/SIGINT, then shuts down
in order: stop accepting HTTP, cancel live tasks (clients get `CANCELLED`), close the
control link, close adapters. Exit code 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import signal
from dataclasses import dataclass
from pathlib import Path

import grpc
import uvicorn
from adapter_host import AdapterHost, ReplicaKey
from specs.control.v1 import control_pb2_grpc
from specs.net import host_port, is_wildcard
from specs.tls import ClientTls, TlsMaterial
from worker_adapters import Endpoint

from orchestratord.config import OrchestratorConfig
from orchestratord.control_link import ControlCommands, ControlLinkServicer
from orchestratord.core import Orchestrator
from orchestratord.deployments.manager import DeploymentManager
from orchestratord.http.app import build_app
from orchestratord.http.openai import journaled_spec
from orchestratord.http.timeouts import guarded_protocol
from orchestratord.http.translate import spec_from_journal
from orchestratord.journal.records import JournaledTask
from orchestratord.registry import PoolRegistry
from orchestratord.tasks import TaskSpec

__all__ = ["Services", "build", "serve"]

VERSION = "0.1.0"
log = logging.getLogger("orchestratord")


@dataclass(slots=True)
class Services:
    config: OrchestratorConfig
    registry: PoolRegistry
    host: AdapterHost
    orchestrator: Orchestrator
    control: ControlLinkServicer
    deployments: DeploymentManager
    commands: ControlCommands
    tls: TlsMaterial | None = None


def _sync_bindings(registry: PoolRegistry, host: AdapterHost, engine_tls: ClientTls | None) -> None:
    """Bind an adapter for every replica the registry knows; unbind vanished ones. A
    replica that serves TLS is dialled with `engine_tls` (the orchestrator's CA and
    client certificate; the system's roots when it has no `tls`)."""
    wanted: set[ReplicaKey] = set()
    for pool in registry.pools():
        for replica in pool.replicas:
            if not replica.endpoint:
                continue
            key = ReplicaKey(pool.pool_id, replica.index)
            wanted.add(key)
            tls = (engine_tls or ClientTls(b"")) if replica.tls else None
            host.bind(key, pool.adapter, Endpoint(replica.endpoint, replica.api_key, tls))
    for key in host.bound() - wanted:
        host.unbind(key)


def _link_kind(tls: TlsMaterial | None) -> str:
    if tls is None:
        return "plaintext"
    return "mtls" if tls.client_auth else "tls"


def build(config: OrchestratorConfig) -> Services:
    tls = config.tls.load() if config.tls is not None else None
    engine_tls = tls.client() if tls is not None else None
    host = AdapterHost()
    holder: list[Orchestrator] = []

    def on_slot_freed() -> None:
        if holder:
            holder[0].wake()
            if holder[0].deployments is not None:
                holder[0].deployments.wake()

    def on_change() -> None:
        _sync_bindings(registry, host, engine_tls)
        on_slot_freed()

    def on_host_lost(host_id: str, reason: str) -> None:
        if holder:
            holder[0].host_lost(host_id, reason)

    registry = PoolRegistry(
        lease_s=config.lease_ms / 1000.0,
        suspect_ttl_s=config.suspect_ttl_ms / 1000.0,
        on_change=on_change,
        on_slot_freed=on_slot_freed,
        on_host_lost=on_host_lost,
    )
    orchestrator = Orchestrator(config, registry, host)
    orchestrator.rebuild = _journaled_spec
    holder.append(orchestrator)
    control = ControlLinkServicer(
        registry,
        config.join_token,
        heartbeat_ms=config.heartbeat_interval_ms,
        lease_ms=config.lease_ms,
        version=VERSION,
        link=_link_kind(tls),
    )
    commands = ControlCommands(control)
    deployments = DeploymentManager(registry, commands, orchestrator.queued_for, registry.in_flight)
    orchestrator.deployments = deployments
    return Services(config, registry, host, orchestrator, control, deployments, commands, tls)


def _public_url(config: OrchestratorConfig, http_port: int) -> str:
    """Where clients reach the API: `public_url`, else the HTTP address (the control
    host's when HTTP listens on the wildcard: the address other hosts already dial)."""
    if config.public_url:
        return config.public_url.rstrip("/")
    host = config.control_host if is_wildcard(config.http_host) else config.http_host
    return f"http://{host_port(host, http_port)}"


def _control_port(
    server: grpc.aio.Server, config: OrchestratorConfig, tls: TlsMaterial | None
) -> int:
    """Bind the control link: TLS with the configured certificate (asking pool managers
    for a client certificate from `ca_file` under `client_auth`), or plaintext."""
    address = host_port(config.control_host, config.control_port)
    if tls is None:
        if config.plaintext_off_host:
            log.warning(
                "INSECURE: the control link on %s is plaintext (insecure: true): join tokens "
                "and engine keys cross the network unencrypted",
                address,
                extra={"action": "insecure"},
            )
        return server.add_insecure_port(address)
    credentials = grpc.ssl_server_credentials(
        [(tls.key_pem, tls.cert_pem)],
        root_certificates=tls.ca_pem if tls.client_auth else None,
        require_client_auth=tls.client_auth,
    )
    return server.add_secure_port(address, credentials)


async def serve(config: OrchestratorConfig, *, ready_file: Path | None = None) -> int:
    services = build(config)
    # Pool managers ping every heartbeat to find silent links (a partition); accept
    # that, and ping back so that a stream whose manager vanished is reaped.
    grpc_server = grpc.aio.server(
        options=(
            ("grpc.keepalive_time_ms", 10_000),
            ("grpc.keepalive_timeout_ms", 5_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_recv_ping_interval_without_data_ms", 500),
            ("grpc.http2.max_ping_strikes", 0),
        )
    )
    control_pb2_grpc.add_ControlLinkServicer_to_server(services.control, grpc_server)
    control_port = _control_port(grpc_server, config, services.tls)
    await grpc_server.start()
    await services.orchestrator.start()  # the journal: recover before serving
    dispatcher = asyncio.create_task(services.orchestrator.run())
    reconciler = asyncio.create_task(
        services.deployments.run(period_s=config.heartbeat_interval_ms / 1000.0)
    )
    http = uvicorn.Server(
        uvicorn.Config(
            build_app(services.orchestrator, services.deployments, services.commands),
            host=config.http_host,
            port=config.http_port,
            loop="none",
            # httptools with deadlines on reading requests and on idle connections
            # (slowloris; `http_request_read_timeout_s`, `http_keep_alive_s`).
            http=guarded_protocol(config.http_request_read_timeout_s),
            timeout_keep_alive=config.http_keep_alive_s,  # type: ignore[arg-type]
            lifespan="off",
            access_log=False,
            log_config=None,
            # No X-Forwarded-* rewriting (nothing here reads the client address; one
            # ASGI layer less per request) and no `server: uvicorn` header.
            proxy_headers=False,
            server_header=False,
            timeout_graceful_shutdown=5,
        )
    )
    # Signals are ours (below): uvicorn would re-raise them after its shutdown.
    http.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task[None]] = []

    async def graceful() -> None:
        # REL-06: admit nothing (503 SHUTTING_DOWN), let running jobs end within the
        # grace while the API still serves their streams, then stop serving.
        await services.orchestrator.shutdown(config.shutdown_grace_s)
        http.should_exit = True

    def on_signal() -> None:
        if stopping:  # a second signal: stop now
            http.should_exit = True
            return
        log.info(
            "orchestratord stopping: no new jobs; running ones get %.0f s",
            config.shutdown_grace_s,
            extra={"action": "shutdown"},
        )
        stopping.append(asyncio.create_task(graceful()))

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    serving = asyncio.create_task(http.serve())
    # uvicorn exposes no start-up event; poll its flag (bounded by the serve task).
    while not http.started and not serving.done():  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    if http.started:
        http_port = http.servers[0].sockets[0].getsockname()[1]
        log.info(
            "orchestratord serving HTTP on %s, control link on %s (%s)",
            host_port(config.http_host, http_port),
            host_port(config.control_host, control_port),
            _link_kind(services.tls),
        )
        services.control.api_url = _public_url(config, http_port)
        # What start-up made (modules, the app and its routes, the jobs the journal gave
        # back: ~93,000 objects here) leaves the collector's generations for good: a full
        # collection walked them all, every few seconds under load. What is garbage
        # among them is still freed by reference counting.
        gc.freeze()
        if ready_file is not None:
            scratch = ready_file.with_suffix(".tmp")
            scratch.write_text(json.dumps({"http_port": http_port, "control_port": control_port}))
            scratch.replace(ready_file)
    await serving
    await services.orchestrator.close()
    services.orchestrator.catalog.close()
    dispatcher.cancel()
    reconciler.cancel()
    await services.deployments.close()
    await grpc_server.stop(2)
    await services.host.close()
    log.info("orchestratord stopped")
    return 0


def _journaled_spec(row: JournaledTask) -> TaskSpec:
    """A journaled job's spec: the facade's requests are kept as they came (OpenAI's
    form), the others as `TaskRequest`."""
    if row.route in ("chat", "completion"):
        return journaled_spec(row)
    return spec_from_journal(row)
