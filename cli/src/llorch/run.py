"""`llorch run MODEL [PROMPT]`: chat with a model, like `ollama run` (CLI-02, CLI-04).

MODEL is any model reference (`llorch.model_ref`): a catalog id or alias, a path,
`hf:ORG/REPO[:QUANT]`, `hf:ORG/REPO/FILE.gguf` or `https://...`. The steps:

1. served already (a ready pool answers to it, `GET /v2/meta/capabilities`): chat;
2. fetch if needed: a remote reference is resolved (`hf:ORG/REPO:QUANT` lists the
   repository) and provisioned into this machine's catalog (the state dir, as
   `llorch provision model`), with a download bar;
3. load: a deployment `run-<model>` (one replica) is applied and followed until ready,
   its phase shown on a terminal; a deployment left pending (no host holds the model, or
   none has room) fails after `--pending-timeout` with the orchestrator's reasons; the
   deployment stays after `run` exits (the model stays loaded, its idle policy applies):
   `llorch deploy rm run-<model>` unloads it;
4. chat: on a terminal, an interactive chat with history (`/reset`, `/exit`, Ctrl-D);
   with PROMPT, or stdin not a terminal, the prompt (PROMPT, else all of stdin) is sent
   once and the answer printed.

Exit codes: 0; 1 the model could not be found, fetched or loaded, or a turn failed
(the error code and reason are printed); 2 a malformed reference; 3 unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from catalog_core.model_id import model_id_for

from llorch import chat, exits
from llorch.api_key import auth_headers, connection_options
from llorch.catalog import add_location_options
from llorch.client import Refused, call
from llorch.model_ref import ModelRefError, classify, resolve_hf_shorthand
from llorch.progress import Phase, WeightsLoading, load_fraction

__all__ = ["add_parser", "deployment_name", "served_names"]

_POLL_S = 0.25


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("run", help="chat with a model (fetched and loaded if needed)")
    connection_options(parser)
    parser.add_argument("model", help="catalog id or alias, path, hf:ORG/REPO[:QUANT], https://…")
    parser.add_argument("prompt", nargs="?", help="answer this once and exit (default: chat)")
    parser.add_argument("--system", help="a system prompt")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--ctx", type=int, default=4096, help="context of a pool run loads")
    parser.add_argument("--load-timeout", type=float, default=900.0, help="seconds (loading)")
    parser.add_argument(
        "--pending-timeout", type=float, default=30.0, help="seconds a load may stay pending"
    )
    add_location_options(parser)
    parser.set_defaults(handler=_run)


def served_names(capabilities: dict[str, Any]) -> set[str]:
    """Every model id and alias a ready pool answers to (pure)."""
    names: set[str] = set()
    for pool in capabilities.get("pools", []):
        for model in pool.get("models", []):
            names.add(str(model["id"]))
            names.update(str(alias) for alias in model.get("aliases", []))
    return names


def deployment_name(model: str) -> str:
    """`run-<model>` in the deployment name alphabet (pure)."""
    slug = re.sub(r"[^a-z0-9.-]+", "-", model.lower()).strip("-.") or "model"
    return f"run-{slug}"[:64].rstrip("-.")


def _served(args: argparse.Namespace) -> set[str]:
    return served_names(call(args, "GET", "/v2/meta/capabilities"))


def _fetch(args: argparse.Namespace, ref: str) -> str:
    """Provision a remote reference into the local catalog; its catalog id."""
    from catalog_core import CatalogError

    from llorch.provision import provision_quietly
    from provisioners import ProvisionError

    try:
        entry = asyncio.run(provision_quietly(args, ref))
    except (ProvisionError, CatalogError) as exc:
        retry = " (retryable: run it again to resume)" if getattr(exc, "retryable", False) else ""
        raise _Failed(f"cannot fetch {ref}: {exc}{retry}") from None
    return entry.id


class _Failed(Exception):
    """The model could not be found, fetched or loaded (exit 1)."""


def _target(args: argparse.Namespace) -> str:
    """What the fleet is asked to serve: a catalog id, alias or local path."""
    ref = classify(args.model)
    if ref.kind == "hf-shorthand":
        return _fetch(args, resolve_hf_shorthand(ref))
    if ref.kind == "remote":
        return _fetch(args, ref.text)
    if ref.kind == "path":
        if not Path(ref.text).is_file():
            raise _Failed(f"MODEL_NOT_FOUND: no model file {ref.text}")
        return model_id_for(Path(ref.text))  # the id its pool manager gives it
    return ref.text


def _load(args: argparse.Namespace, model: str) -> None:
    """Apply a one-replica deployment of `model` and wait until it serves."""
    name = deployment_name(model)
    body = {"model": model, "replicas": {"min": 1, "max": 1}, "ctx": args.ctx}
    call(args, "PUT", f"/v2/deployments/{name}", body)
    phase = Phase(f"loading {model}")
    weights = WeightsLoading("loading the weights")
    started = time.monotonic()
    pending_since: float | None = None
    try:
        while time.monotonic() - started < args.load_timeout:
            status = call(args, "GET", f"/v2/deployments/{name}")
            fraction = load_fraction(status["pools"])
            weights.update(fraction)
            warming = weights.seen and fraction is None and status["phase"] != "ready"
            phase.state("warming up" if warming else str(status["phase"]))
            if status["phase"] == "ready":
                return
            if status["phase"] == "pending":
                pending_since = pending_since or time.monotonic()
                if time.monotonic() - pending_since > args.pending_timeout:
                    reasons = "; ".join(
                        f"{r['host_id']}/{r['device_id']}: {r['reason']}"
                        for r in status["pending_reasons"]
                    )
                    raise _Failed(
                        f"deployment {name} of {model} stayed pending: {reasons or 'no host'}"
                    )
            else:
                pending_since = None
            time.sleep(_POLL_S)
    finally:
        weights.close()
        phase.close()
    raise _Failed(f"deployment {name} of {model} was not ready within {args.load_timeout:.0f} s")


async def _once(args: argparse.Namespace, model: str, prompt: str) -> int:
    messages = [{"role": "system", "content": args.system}] if args.system else []
    messages.append({"role": "user", "content": prompt})
    body = {"model": model, "workload": "chat", "messages": messages}
    body["max_tokens"] = args.max_tokens
    async with httpx.AsyncClient(
        base_url=args.url, timeout=httpx.Timeout(10, read=None), headers=auth_headers(args)
    ) as client:
        _, error = await chat.turn(client, body)
    if error is not None:
        print(f"\nllorch: {error}", file=sys.stderr)
        return exits.FAILED
    return exits.OK


def _run(args: argparse.Namespace) -> int:
    try:
        model = args.model
        if model not in _served(args):
            model = _target(args)
            if model not in _served(args):
                _load(args, model)
        prompt = args.prompt
        if prompt is None and not sys.stdin.isatty():
            prompt = sys.stdin.read()
        if prompt is not None:
            if not prompt.strip():
                print("llorch run: the prompt is empty", file=sys.stderr)
                return exits.USAGE
            return asyncio.run(_once(args, model, prompt.strip()))
        chat_args = argparse.Namespace(**vars(args), session=f"run-{uuid.uuid4().hex[:12]}")
        chat_args.model = model
        return asyncio.run(chat.converse(chat_args))
    except ModelRefError as exc:
        print(f"llorch: {exc}", file=sys.stderr)
        return exits.USAGE if exc.code == "INVALID_MODEL_REF" else exits.FAILED
    except (_Failed, Refused) as exc:
        print(f"llorch: {exc}", file=sys.stderr)
        return exits.FAILED
    except httpx.TransportError as exc:
        print(f"llorch: cannot reach {args.url}: {exc}", file=sys.stderr)
        return exits.UNREACHABLE
