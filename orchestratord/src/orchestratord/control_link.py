"""The control-link gRPC server: pool managers dial in here (POOL-01, ARCHITECTURE §1).

One bidirectional stream per pool manager. The manager presents its join token as
`authorization: Bearer <token>` (compared in constant time with each accepted token;
SEC-01; several tokens, comma-separated, while a token is rotated); its first message
must be `Hello`, answered with `Welcome`; then `Snapshot`s feed the registry. When the
stream breaks the host is lost at once; a host that goes silent is lost when its lease
expires (`PoolRegistry.expire`, driven by the orchestrator's lease loop).

Every snapshot's endpoints are judged by `link_policy.refuse_unreachable` against the
stream's peer address (FLT-01); refused pools and pools another host owns are sent
back as `Refusals` whenever that set changes, and logged here.

`send(host_id, command)` queues a command for a connected host and returns a future
resolved by the host's `CommandResult`. This is the only module (with
`control_translate`) that touches the control protocol.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
import uuid
from collections.abc import Callable

import grpc
from specs.control.v1 import control_pb2 as pb
from specs.control.v1 import control_pb2_grpc

from orchestratord.control_translate import inventory_from_wire, pool_from_wire
from orchestratord.deployments.manager import PoolPlan
from orchestratord.link_policy import peer_host, refuse_unreachable
from orchestratord.registry import PoolRegistry

__all__ = ["CommandFailed", "ControlCommands", "ControlLinkServicer"]

log = logging.getLogger("orchestratord.control")


class CommandFailed(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class _Session:
    def __init__(self, host_id: str, peer: str) -> None:
        self.host_id = host_id
        self.peer = peer
        self.refused: dict[str, str] = {}
        self.outbox: asyncio.Queue[pb.OrchestratorMessage] = asyncio.Queue(maxsize=256)
        self.waiting: dict[str, asyncio.Future[pb.CommandResult]] = {}


class ControlLinkServicer(control_pb2_grpc.ControlLinkServicer):
    def __init__(
        self,
        registry: PoolRegistry,
        join_token: str,
        *,
        heartbeat_ms: int,
        lease_ms: int,
        version: str,
        link: str = "plaintext",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._registry = registry
        self._expected = [
            f"Bearer {token.strip()}".encode() for token in join_token.split(",") if token.strip()
        ]
        self._heartbeat_ms = heartbeat_ms
        self._lease_ms = lease_ms
        self._version = version
        self._link = link
        self.api_url = ""  # set once HTTP listens (its port may be chosen then)
        self._clock = clock
        self._sessions: dict[str, _Session] = {}

    def connected_hosts(self) -> list[str]:
        return sorted(self._sessions)

    async def send(
        self, host_id: str, command: pb.Command, *, timeout_s: float = 30.0
    ) -> pb.CommandResult:
        """Send a command and wait for its result; CommandFailed when it fails."""
        session = self._sessions.get(host_id)
        if session is None:
            raise CommandFailed("POOL_UNREADY", f"host {host_id} is not connected")
        command.command_id = command.command_id or uuid.uuid4().hex
        future: asyncio.Future[pb.CommandResult] = asyncio.get_running_loop().create_future()
        session.waiting[command.command_id] = future
        await session.outbox.put(pb.OrchestratorMessage(command=command))
        try:
            result = await asyncio.wait_for(future, timeout_s)
        except TimeoutError as exc:
            raise CommandFailed("INTERNAL", f"host {host_id} did not answer in time") from exc
        finally:
            session.waiting.pop(command.command_id, None)
        if not result.ok:
            raise CommandFailed(result.error_code or "INTERNAL", result.message)
        return result

    async def Connect(  # type: ignore[override]  # noqa: N802 - read/write style handler
        self,
        request_iterator: object,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> None:
        presented = dict(context.invocation_metadata() or ()).get("authorization", "")
        offered = str(presented).encode()
        # Every token is compared (a list, not a short-circuit), so timing tells nothing.
        if not any([hmac.compare_digest(offered, token) for token in self._expected]):  # noqa: C419
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "bad or missing join token")
        first = await context.read()
        if not isinstance(first, pb.ManagerMessage) or first.WhichOneof("msg") != "hello":
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "first message must be Hello")
        hello = first.hello
        host_id = hello.host_id
        if not host_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "Hello.host_id is empty")
        previous = self._sessions.get(host_id)
        if previous is not None:
            log.warning("host %s reconnected; replacing its old control stream", host_id)
        session = _Session(host_id, peer_host(str(context.peer() or "")))
        self._sessions[host_id] = session
        self._registry.host_connected(
            host_id, self._clock(), inventory_from_wire(hello.inventory), hello.cordoned
        )
        self._registry.host_link(host_id, session.peer, self._link)
        log.info(
            "host %s joined from %s over a %s link (manager %s)",
            host_id,
            session.peer or "a local socket",
            self._link,
            hello.manager_version,
            extra={"host_id": host_id, "action": "join"},
        )
        await context.write(
            pb.OrchestratorMessage(
                welcome=pb.Welcome(
                    orchestrator_version=self._version,
                    heartbeat_interval_ms=self._heartbeat_ms,
                    lease_ms=self._lease_ms,
                    peer_host=session.peer,
                    api_url=self.api_url,
                )
            )
        )
        writer = asyncio.create_task(self._write(session, context))
        try:
            await self._read(session, context)
        finally:
            writer.cancel()
            if self._sessions.get(host_id) is session:
                del self._sessions[host_id]
                self._registry.host_lost(host_id, "control stream closed")
                log.warning("host %s lost: control stream closed", host_id)
            for future in session.waiting.values():
                if not future.done():
                    future.set_exception(CommandFailed("POOL_UNREADY", "control stream closed"))

    async def _read(self, session: _Session, context: grpc.aio.ServicerContext) -> None:  # type: ignore[type-arg]
        while True:
            message = await context.read()
            if not isinstance(message, pb.ManagerMessage):
                return  # end of stream
            kind = message.WhichOneof("msg")
            if kind == "snapshot":
                snapshot = message.snapshot
                self._registry.host_inventory(
                    session.host_id, inventory_from_wire(snapshot.inventory), snapshot.cordoned
                )
                wire_pools = [pool_from_wire(session.host_id, p) for p in snapshot.pools]
                pools, refused = refuse_unreachable(wire_pools, session.peer)
                for pool_id in self._registry.host_snapshot(session.host_id, pools, self._clock()):
                    refused[pool_id] = "pool id already served by another host; ignored"
                await self._refusals(session, refused)
            elif kind == "result":
                future = session.waiting.get(message.result.command_id)
                if future is not None and not future.done():
                    future.set_result(message.result)

    async def _refusals(self, session: _Session, refused: dict[str, str]) -> None:
        """Record, log and tell the manager what changed in its refused pools."""
        if refused == session.refused:
            return
        for pool_id, reason in sorted(refused.items()):
            if session.refused.get(pool_id) != reason:
                log.error(
                    "host %s: pool %s refused: %s",
                    session.host_id,
                    pool_id,
                    reason,
                    extra={"host_id": session.host_id, "pool_id": pool_id, "action": "refuse"},
                )
        session.refused = refused
        self._registry.host_refusals(session.host_id, refused)
        wire = [pb.Refusal(pool_id=k, reason=v) for k, v in sorted(refused.items())]
        await session.outbox.put(pb.OrchestratorMessage(refusals=pb.Refusals(refusals=wire)))

    async def _write(self, session: _Session, context: grpc.aio.ServicerContext) -> None:  # type: ignore[type-arg]
        while True:
            await context.write(await session.outbox.get())


class ControlCommands:
    """Commands over the control link: the deployments' `CommandPort` (Preload, Stop)
    and the control plane's Drain, Undrain, Reload, VerifyModel, TailLog and Cordon."""

    def __init__(self, servicer: ControlLinkServicer) -> None:
        self._servicer = servicer

    async def preload(self, host_id: str, plan: PoolPlan) -> None:
        spec = pb.PoolSpec(
            pool_id=plan.pool_id,
            model=plan.model,
            engine=plan.engine,
            ctx=plan.ctx,
            slots=plan.slots,
            replicas=1,
            device=plan.device,
            model_aliases=list(plan.aliases),
            deployment=plan.deployment,
            memory_estimated_bytes=plan.memory_estimated_bytes,
        )
        await self._servicer.send(host_id, pb.Command(preload=pb.Preload(spec=spec)))

    async def stop(self, host_id: str, pool_id: str) -> None:
        await self._servicer.send(host_id, pb.Command(stop=pb.Stop(pool_id=pool_id)))

    async def drain(self, host_id: str, pool_id: str, deadline_ms: int) -> None:
        command = pb.Command(drain=pb.Drain(pool_id=pool_id, deadline_ms=deadline_ms))
        await self._servicer.send(host_id, command)

    async def undrain(self, host_id: str, pool_id: str) -> None:
        """Undo a drain; answers once the host's snapshot says the pool is not draining
        (its engines may still be starting)."""
        await self._servicer.send(host_id, pb.Command(undrain=pb.Undrain(pool_id=pool_id)))

    async def reload(self, host_id: str, pool_id: str, model: str, timeout_s: float) -> str:
        """Reload a pool to another model; returns the outcome in words, CommandFailed
        (with the reason) when the host refused it or rolled it back."""
        command = pb.Command(reload=pb.Reload(pool_id=pool_id, model=model))
        result = await self._servicer.send(host_id, command, timeout_s=timeout_s)
        return str(result.message)

    async def verify_model(self, host_id: str, model: str) -> str:
        """Re-hash the model on the host; returns its sha256, CommandFailed on mismatch."""
        command = pb.Command(verify_model=pb.VerifyModel(model=model))
        result = await self._servicer.send(host_id, command, timeout_s=600.0)
        return str(result.message)

    async def tail_log(
        self, host_id: str, pool_id: str, replica: int, offset: int, max_bytes: int
    ) -> pb.LogChunk:
        """A chunk of a pool replica's engine log, read on its host (`llorch logs`)."""
        ask = pb.TailLog(pool_id=pool_id, replica=replica, offset=offset, max_bytes=max_bytes)
        result = await self._servicer.send(host_id, pb.Command(tail_log=ask))
        return result.log

    async def cordon(self, host_id: str, cordoned: bool, device: str = "") -> None:
        command = pb.Command(cordon=pb.Cordon(cordoned=cordoned, device=device))
        await self._servicer.send(host_id, command)
