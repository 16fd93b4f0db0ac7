"""`llorch provision engine SPEC`: prepare an engine and record it in the catalog (CLI-02,
PRV-02, PRV-03).

SPEC is `ENGINE:MODE[=VALUE]` (the grammar is in the help's epilog and in
`provisioners.plan.engine_specs`): `llamacpp:source=sdist:0.3.36` builds llama-server
with cmake, `llamacpp-server-py:package` makes a managed venv, `llamacpp:binary=PATH`
probes an existing executable, `vllm:container` uses a pinned image. Engines live under
`<state dir>/engines` (`--engines-dir` overrides) and are recorded in the state dir's
catalog; the same spec and flags a second time reuse the entry and build nothing.

Each step is narrated on stderr as it starts; a compile shows a progress bar on a terminal
(steps done of total, rate and ETA, from ninja's `[12/80]` or make's `[ 45%]`).
`--dry-run` prints the plan. The
result is a table of the entry and the command that runs it (or `--json`) on stdout.
Exit codes: 0 provisioned; 1 it failed (a missing tool is named with how to install it;
the message says whether trying again can help); 2 the spec or a flag is malformed.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Any

from catalog_core import CatalogError, CatalogStore, EngineEntry
from provisioners.engines import EngineProvisioner, EngineProvisionerSettings, PreparedEngine
from provisioners.errors import InvalidEngineSpec, ProvisionError
from provisioners.plan import EnginePlan, SpecOptions, engine_specs, parse_engine_spec
from provisioners.plan.engine_specs import BuildOptions

from llorch.catalog import EXIT_FAILED, EXIT_OK, add_location_options, open_store, state_dir
from llorch.catalog import table as format_table
from llorch.progress import NarrationLines, Progress

__all__ = ["add_engine_parser", "run_engine"]

EXIT_USAGE = 2
_narration = logging.getLogger("provisioners")


def add_engine_parser(kinds: Any) -> None:
    """Register `engine` under `llorch provision`."""
    engine = kinds.add_parser(
        "engine",
        help="build, install or locate an engine and record it in the catalog",
        epilog=_grammar(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    engine.add_argument("spec", help="ENGINE:MODE[=VALUE], e.g. llamacpp:source=sdist:0.3.36")
    build = engine.add_argument_group("source builds")
    build.add_argument("--cuda", action="store_true", help="build with CUDA (needs nvcc)")
    build.add_argument("--cuda-arch", help="CMAKE_CUDA_ARCHITECTURES, e.g. '86;89'")
    build.add_argument(
        "--no-native", action="store_true", help="portable CPU code, not for this CPU only"
    )
    build.add_argument(
        "--amx",
        action="store_true",
        help="keep llama.cpp's AMX kernels in a native build (off: they crash on some VMs)",
    )
    build.add_argument(
        "--cmake-arg",
        action="append",
        default=[],
        metavar="-DNAME=VALUE",
        help="extra cmake flag, repeatable; write it as --cmake-arg=-DNAME=VALUE",
    )
    build.add_argument("--jobs", type=_positive, default=None, help="compile jobs (default: CPUs)")
    package = engine.add_argument_group("packages and containers")
    package.add_argument("--python", help="interpreter the venv is made from")
    package.add_argument("--pin", action="append", default=[], help="extra pin, repeatable")
    package.add_argument("--runtime", choices=("podman", "docker"), help="container tool")
    add_location_options(engine)
    engine.add_argument("--engines-dir", type=Path, help="default: STATE_DIR/engines")
    engine.add_argument("--dry-run", action="store_true", help="print the plan, do nothing")
    engine.add_argument("--json", action="store_true", help="print JSON instead of a table")
    engine.set_defaults(handler=lambda args: asyncio.run(run_engine(args)))


async def run_engine(args: argparse.Namespace) -> int:
    options = _options(args)
    try:
        parse_engine_spec(args.spec, options)  # a malformed spec is a usage error
    except InvalidEngineSpec as exc:
        print(f"llorch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        with open_store(args) as store:
            return await _provision(args, store, options)
    except (ProvisionError, CatalogError, ValueError) as exc:
        retry = " (retryable: run it again)" if getattr(exc, "retryable", False) else ""
        print(f"llorch: {exc}{retry}", file=sys.stderr)
        return EXIT_FAILED


def _options(args: argparse.Namespace) -> SpecOptions:
    build = BuildOptions(
        cuda=args.cuda,
        cuda_architectures=args.cuda_arch,
        native=not args.no_native,
        amx=args.amx,
        cmake_args=tuple(args.cmake_arg),
    )
    return SpecOptions(build, args.python, tuple(args.pin), args.runtime)


async def _provision(args: argparse.Namespace, store: CatalogStore, options: SpecOptions) -> int:
    root: Path = (args.engines_dir or state_dir(args) / "engines").expanduser().absolute()
    jobs = {"jobs": args.jobs} if args.jobs else {}
    provisioner = EngineProvisioner(store, EngineProvisionerSettings(root, **jobs))
    if args.dry_run:
        _print_plan(await provisioner.plan(args.spec, options), args.json)
        return EXIT_OK
    bar = Progress("compile", unit="step")
    handler = NarrationLines()
    _narration.addHandler(handler)
    _narration.setLevel(logging.INFO)
    try:
        prepared = await provisioner.provision(args.spec, options, progress=bar)
    finally:
        bar.close()
        _narration.removeHandler(handler)
    _print_result(store.get_engine(prepared.entry_id), prepared, args.json)
    return EXIT_OK


def _print_plan(plan: EnginePlan, as_json: bool) -> None:
    steps = [{"action": step.action, "target": step.target} for step in plan.steps]
    if as_json:
        document = {
            "spec": plan.spec, "engine": plan.engine, "mode": plan.mode, "id": plan.entry_id,
            "build_key": plan.build_key, "replan": plan.replan, "steps": steps,
        }  # fmt: skip
        print(json.dumps(document, indent=2))
        return
    print(f"plan for {plan.spec} -> {plan.entry_id or '(id known once the source is here)'}")
    for number, step in enumerate(steps, start=1):
        print(f"  {number}. {step['action']:<12} {step['target']}")
    if plan.replan:
        print("  then: plan again with the source's digest (build, probe, register)")


def _print_result(entry: EngineEntry, prepared: PreparedEngine, as_json: bool) -> None:
    if as_json:
        document = {
            "entry": {**dataclasses.asdict(entry), "flags": list(entry.flags)},
            "command": list(prepared.command),
            "ports": dict(prepared.ports),
            "api_key_env": prepared.api_key_env,
        }
        print(json.dumps(document, indent=2))
        return
    header = ("ID", "ENGINE", "VERSION", "MODE", "ARTIFACT")
    print(
        format_table(header, [(entry.id, entry.engine, entry.version, entry.mode, entry.artifact)])
    )
    print(f"command: {' '.join(prepared.command)}")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def _grammar() -> str:
    """The spec grammar block of `provisioners.plan.engine_specs`' docstring."""
    doc = engine_specs.__doc__ or ""
    start = doc.find("SPEC :=")
    end = doc.find("\n\nA git ref")
    grammar = doc[start:end].strip() if start >= 0 and end > start else ""
    engines = "\n".join(
        f"    {name:<20} {', '.join(sorted(profile.modes)):<28} {profile.title}"
        for name, profile in engine_specs.ENGINES.items()
    )
    return f"spec grammar:\n\n    {grammar}\n\nengines and their modes:\n\n{engines}"
