"""`llorch provision model REF`: fetch, verify and register a model (CLI-02, PRV-01).

REF is a path or `file:/abs/path` (only inside an allowed root: `--root`, repeatable,
plus the state dir's `models/`; a GGUF file, or a Hugging Face model folder for vLLM,
registered in place with its folder digest), `hf:ORG/REPO[:QUANT]` (the repository's GGUF file for
QUANT, found by listing it on the hub), `hf:org/repo[@rev]/path/file.gguf` or
`https://...`. Downloads
go under `<state dir>/models`, resume where an earlier try stopped, and show a progress
bar (bytes, percent, rate, ETA) on stderr when it is a terminal; each step is narrated
on stderr as it starts. The
entry is registered Active only after its sha256 verifies (`--sha256` pins it).
`--dry-run` prints the plan without running it. Prints the entry (a line, or `--json`)
on stdout. Exit codes: 0 provisioned; 1 it failed (the error says why, and whether
trying again can help); 2 usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import re
import sys
from pathlib import Path
from typing import Any

from catalog_core import CatalogError, CatalogStore, ModelEntry
from provisioners.plan import ModelPlan

from llorch.catalog import EXIT_FAILED, EXIT_OK, add_location_options, open_store, state_dir
from llorch.exits import USAGE as EXIT_USAGE
from llorch.model_ref import ModelRefError, classify, resolve_hf_shorthand
from llorch.progress import NarrationLines, Progress, human_bytes
from llorch.provision_engine import add_engine_parser
from provisioners import ModelProvisioner, ModelProvisionerSettings, ProvisionError

__all__ = ["add_parser", "provision_quietly", "provisioner_ref", "run_model"]

_narration = logging.getLogger("provisioners")


def _sha256(text: str) -> str:
    if not re.fullmatch(r"[0-9a-fA-F]{64}", text.strip()):
        raise argparse.ArgumentTypeError("expected 64 hex digits")
    return text.strip().lower()


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("provision", help="fetch models, prepare engines")
    kinds = parser.add_subparsers(dest="provision_kind", required=True)
    add_engine_parser(kinds)  # `llorch provision engine SPEC`: llorch.provision_engine
    model = kinds.add_parser("model", help="fetch, verify and register a model")
    model.add_argument(
        "ref", help="PATH, file:/abs/path, hf:ORG/REPO[:QUANT], hf:org/repo[@rev]/file, https://…"
    )
    model.add_argument(
        "--sha256", type=_sha256, help="the file's expected sha256 (a folder's: its folder digest)"
    )
    model.add_argument("--id", dest="model_id", help="catalog id (default: from the name)")
    model.add_argument(
        "--root", type=Path, action="append", default=[], help="allow file: refs under DIR"
    )
    add_location_options(model)
    model.add_argument("--dry-run", action="store_true", help="print the plan, do nothing")
    model.add_argument("--json", action="store_true", help="print the entry as JSON")
    model.set_defaults(handler=lambda args: asyncio.run(run_model(args)))


def provisioner_ref(text: str) -> str:
    """A model reference as the provisioners take it: `hf:ORG/REPO[:QUANT]` resolved to
    one file on the hub, a path as `file:/abs/path`; ModelRefError for a catalog id
    (nothing to fetch) or a malformed reference."""
    ref = classify(text)
    if ref.kind == "hf-shorthand":
        return resolve_hf_shorthand(ref)
    if ref.kind == "path":
        return f"file:{ref.text}"
    if ref.kind == "id":
        raise ModelRefError(
            "INVALID_MODEL_REF", text, "not a path, hf: or https:// reference (nothing to fetch)"
        )
    return ref.text


async def run_model(args: argparse.Namespace) -> int:
    try:
        args.ref = provisioner_ref(args.ref)
    except ModelRefError as exc:
        print(f"llorch: {exc}", file=sys.stderr)
        return EXIT_USAGE if exc.code == "INVALID_MODEL_REF" else EXIT_FAILED
    try:
        with open_store(args) as store:
            return await _provision(args, store)
    except (ProvisionError, CatalogError, ValueError) as exc:
        retry = " (retryable: run it again to resume)" if getattr(exc, "retryable", False) else ""
        print(f"llorch: {exc}{retry}", file=sys.stderr)
        return EXIT_FAILED


async def _provision(args: argparse.Namespace, store: CatalogStore) -> int:
    models_dir = state_dir(args) / "models"
    settings = ModelProvisionerSettings(
        models_dir=models_dir, allowed_roots=(*args.root, models_dir)
    )
    bar = Progress("download")
    handler = NarrationLines()
    _narration.addHandler(handler)
    _narration.setLevel(logging.INFO)
    try:
        async with ModelProvisioner(store, settings) as provisioner:
            if args.dry_run:
                plan = await provisioner.plan(args.ref, sha256=args.sha256, model_id=args.model_id)
                _print_plan(plan, args.json)
                return EXIT_OK
            entry = await provisioner.provision(
                args.ref, sha256=args.sha256, model_id=args.model_id, progress=bar
            )
    finally:
        bar.close()
        _narration.removeHandler(handler)
    _print_entry(entry, args.json)
    return EXIT_OK


def _print_plan(plan: ModelPlan, as_json: bool) -> None:
    steps = [{"action": step.action, "target": step.target} for step in plan.steps]
    if as_json:
        document = {"ref": plan.ref, "id": plan.model_id, "local_path": plan.local_path}
        print(json.dumps({**document, "steps": steps}, indent=2))
        return
    print(f"plan for {plan.ref} -> {plan.model_id} at {plan.local_path}")
    for number, step in enumerate(steps, start=1):
        print(f"  {number}. {step['action']:<12} {step['target']}")


def _print_entry(entry: ModelEntry, as_json: bool) -> None:
    if as_json:
        print(json.dumps(dataclasses.asdict(entry), indent=2))
        return
    print(
        f"{entry.id}: {entry.architecture} {entry.quantization}, {human_bytes(entry.size)}, "
        f"sha256 {entry.sha256}, at {entry.local_path} ({entry.lifecycle})"
    )


async def provision_quietly(args: argparse.Namespace, ref: str) -> ModelEntry:
    """Provision `ref` into the state dir's catalog (`--state-dir`, `--catalog`), with
    the download bar and the narrated steps: `llorch run` and `llorch up --model`."""
    with open_store(args) as store:
        models_dir = state_dir(args) / "models"
        settings = ModelProvisionerSettings(models_dir=models_dir, allowed_roots=(models_dir,))
        bar = Progress("download")
        handler = NarrationLines()
        _narration.addHandler(handler)
        _narration.setLevel(logging.INFO)
        try:
            async with ModelProvisioner(store, settings) as provisioner:
                return await provisioner.provision(ref, progress=bar)
        finally:
            bar.close()
            _narration.removeHandler(handler)
