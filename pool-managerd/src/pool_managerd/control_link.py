"""The control-link client: dial the orchestrator, say Hello, send snapshots, run commands.

One bidirectional gRPC stream (POOL-01). The join token goes in the `authorization`
metadata, inside TLS when `tls` is given (FLT-02: the orchestrator's certificate is
checked against `tls.ca_pem`; this host's certificate is presented for mutual TLS).
Pools the orchestrator refuses to offer come back as `Refusals` and are logged as
errors, once per change. A snapshot is sent every heartbeat and at once whenever a pool changes (a
readiness flip reaches the orchestrator without waiting for the next heartbeat), and
before every command's result. A
broken stream is redialled with jittered exponential back-off (0.25 s doubling to 3 s, so
a host rejoins within seconds of a partition healing). A link that goes silent (a
partition: packets dropped, nothing reset) is found by HTTP/2 keepalive pings within
about three heartbeats, and a dial that gets no Welcome within `_WELCOME_S` is retried,
so a connection attempt stuck in a partition does not outlive it.
All writes go through one writer task: gRPC streams do not take concurrent writes.
The only module of pool-managerd that imports grpc, with `control_translate`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable

import grpc
from specs.control.v1 import control_pb2 as pb
from specs.control.v1 import control_pb2_grpc
from specs.tls import TlsMaterial

__all__ = ["ControlLink"]

log = logging.getLogger("pool_managerd.control")
_BACKOFF_INITIAL_S = 0.25
_BACKOFF_MAX_S = 3.0
_WELCOME_S = 3.0

CommandHandler = Callable[[pb.Command], Awaitable[pb.CommandResult]]


class LinkRefused(Exception):
    """The orchestrator accepted the stream but did not answer Hello with Welcome."""


class ControlLink:
    def __init__(
        self,
        address: str,
        join_token: str,
        *,
        tls: TlsMaterial | None = None,
        hello: Callable[[], pb.Hello],
        snapshot: Callable[[], pb.Snapshot],
        changed: asyncio.Event,
        on_command: CommandHandler,
        heartbeat_s: float,
    ) -> None:
        self._address = address
        self._token = join_token
        self._tls = tls
        self._refusals: dict[str, str] = {}
        self.api_url = ""  # the fleet's API, as the orchestrator's Welcome said
        self._hello = hello
        self._snapshot = snapshot
        self._changed = changed
        self._on_command = on_command
        self._heartbeat_s = heartbeat_s
        self.connected = asyncio.Event()
        self._outbox: asyncio.Queue[pb.ManagerMessage] = asyncio.Queue(maxsize=64)
        self._answering: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        """Stay connected until cancelled."""
        backoff = _BACKOFF_INITIAL_S
        while True:
            try:
                await self._session()
                backoff = _BACKOFF_INITIAL_S
            except grpc.aio.AioRpcError as exc:
                unauthenticated = exc.code() == grpc.StatusCode.UNAUTHENTICATED
                log.log(
                    logging.ERROR if unauthenticated else logging.WARNING,
                    "control link to %s failed: %s %s%s",
                    self._address,
                    exc.code().name,
                    exc.details(),
                    _hint(exc, self._tls),
                    extra={"action": "dial"},
                )
            except LinkRefused as exc:
                log.warning(
                    "control link to %s refused: %s", self._address, exc, extra={"action": "dial"}
                )
            self.connected.clear()
            delay = backoff * (0.5 + random.random())
            await asyncio.sleep(delay)
            backoff = min(backoff * 2, _BACKOFF_MAX_S)

    async def send_final_snapshot(self) -> None:
        """Best effort, used at shutdown: report the pools' final state."""
        if self.connected.is_set():
            with contextlib.suppress(asyncio.QueueFull):
                self._outbox.put_nowait(pb.ManagerMessage(snapshot=self._snapshot()))
            await asyncio.sleep(0.1)

    async def _session(self) -> None:
        metadata = (("authorization", f"Bearer {self._token}"),)
        async with self._channel() as channel:
            stub = control_pb2_grpc.ControlLinkStub(channel)
            call = stub.Connect(metadata=metadata)  # type: ignore[call-arg]  # write-style call
            try:
                async with asyncio.timeout(_WELCOME_S):
                    await call.write(pb.ManagerMessage(hello=self._hello()))
                    welcome = await call.read()
            except TimeoutError:
                call.cancel()
                raise LinkRefused(f"no Welcome within {_WELCOME_S:.0f} s") from None
            if not isinstance(welcome, pb.OrchestratorMessage) or not welcome.HasField("welcome"):
                raise LinkRefused("no Welcome from the orchestrator")
            heartbeat_s = welcome.welcome.heartbeat_interval_ms / 1000.0 or self._heartbeat_s
            self.api_url = welcome.welcome.api_url
            self.connected.set()
            log.info("joined orchestrator %s", self._address, extra={"action": "join"})
            self._outbox = asyncio.Queue(maxsize=64)
            tasks = [
                asyncio.create_task(self._writer(call)),
                asyncio.create_task(self._reader(call)),
                asyncio.create_task(self._heartbeats(min(heartbeat_s, self._heartbeat_s))),
            ]
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                call.cancel()

    def _channel(self) -> grpc.aio.Channel:
        # Keepalive finds a silent link: a ping every heartbeat (at least 1 s), the link
        # is dead when one goes unanswered for two heartbeats (at least 2 s).
        heartbeat_ms = max(1000, int(self._heartbeat_s * 1000))
        options = (
            ("grpc.keepalive_time_ms", heartbeat_ms),
            ("grpc.keepalive_timeout_ms", 2 * heartbeat_ms),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
        )
        tls = self._tls
        if tls is None:
            return grpc.aio.insecure_channel(self._address, options=options)
        credentials = grpc.ssl_channel_credentials(
            root_certificates=tls.ca_pem or None,
            private_key=tls.key_pem or None,
            certificate_chain=tls.cert_pem or None,
        )
        return grpc.aio.secure_channel(self._address, credentials, options=options)

    async def _heartbeats(self, period_s: float) -> None:
        while True:
            self._changed.clear()
            await self._outbox.put(pb.ManagerMessage(snapshot=self._snapshot()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), period_s)

    async def _writer(self, call: grpc.aio.StreamStreamCall) -> None:  # type: ignore[type-arg]
        while True:
            await call.write(await self._outbox.get())

    async def _reader(self, call: grpc.aio.StreamStreamCall) -> None:  # type: ignore[type-arg]
        while True:
            message = await call.read()
            if not isinstance(message, pb.OrchestratorMessage):
                return  # end of stream
            kind = message.WhichOneof("msg")
            if kind == "command":
                task = asyncio.create_task(self._answer(message.command))
                self._answering.add(task)
                task.add_done_callback(self._answering.discard)
            elif kind == "refusals":
                self._note_refusals(message.refusals)

    def _note_refusals(self, refusals: pb.Refusals) -> None:
        now = {r.pool_id: r.reason for r in refusals.refusals}
        for pool_id, reason in sorted(now.items()):
            if self._refusals.get(pool_id) != reason:
                log.error(
                    "orchestrator refuses pool %s: %s",
                    pool_id,
                    reason,
                    extra={"pool_id": pool_id, "action": "refused"},
                )
        for pool_id in sorted(set(self._refusals) - set(now)):
            log.info(
                "orchestrator accepts pool %s again",
                pool_id,
                extra={"pool_id": pool_id, "action": "accepted"},
            )
        self._refusals = now

    async def _answer(self, command: pb.Command) -> None:
        try:
            result = await self._on_command(command)
        except Exception as exc:  # a bug in a handler must still answer the command
            log.exception(
                "command %s failed: %s",
                command.WhichOneof("kind"),
                type(exc).__name__,
                extra={"action": "command.error"},
            )
            result = pb.CommandResult(
                ok=False, error_code="INTERNAL", message=f"the pool manager failed: {exc!r}"
            )
        result.command_id = command.command_id
        # The snapshot first: the orchestrator reads the stream in order, so it knows
        # the command's effect (a reloaded model, a new pool) when the result arrives.
        await self._outbox.put(pb.ManagerMessage(snapshot=self._snapshot()))
        await self._outbox.put(pb.ManagerMessage(result=result))


def _hint(exc: grpc.aio.AioRpcError, tls: TlsMaterial | None) -> str:
    """What an operator can do about a failed dial, from the error and our settings."""
    details = (exc.details() or "").lower()
    if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
        return " (the join token does not match the orchestrator's)"
    if exc.code() != grpc.StatusCode.UNAVAILABLE:
        return ""
    if any(word in details for word in ("timed out", "no route", "unreachable", "refused")):
        return " (the orchestrator cannot be reached from this host)"
    if tls is None:
        return " (the orchestrator may serve TLS while this link is plaintext: set tls)"
    if "certificate" in details or "handshake" in details or "ssl" in details:
        return (
            " (TLS handshake failed: tls.ca_file must be the CA that signed the "
            "orchestrator's certificate, and that certificate must name this address)"
        )
    if "socket closed" in details or "connection reset" in details:
        return (
            " (the orchestrator closed the TLS handshake: it does not accept this host's "
            "client certificate; tls.cert_file must come from the CA it trusts)"
        )
    return ""
