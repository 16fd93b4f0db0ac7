"""`llorch deploy|pools|hosts`: the control plane from the terminal (CLI-03, CLI-05).

    llorch deploy apply FILE      PUT each deployment in a YAML/JSON file (one mapping with
                                  `name`, or a list of them); prints their status
    llorch deploy ls | show NAME | rm NAME
    llorch pools ls | show ID | drain ID [--deadline-ms N] | undrain ID | reload ID MODEL
    llorch hosts ls | cordon HOST [--device ID] | uncordon HOST [--device ID]

Human tables by default, `--json` for scripts. The orchestrator is `--url` (default
`$LLORCH_URL` or http://127.0.0.1:8080); the API key `--api-key` or `$LLORCH_API_KEY`
(`llorch.api_key`):
the commands that change the fleet need an `admin` key (SEC-05). Exit codes: 0 success;
1 the orchestrator refused (its error code and message are printed, e.g. `FORBIDDEN`
for a client key); 2 usage error; 3 unreachable.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import yaml
from specs.deployment_file import load_deployments
from specs.settings import SettingsError

from llorch.api_key import connection_options
from llorch.catalog import table
from llorch.client import Refused as _Refused
from llorch.client import call as _call

__all__ = ["add_parsers"]

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


class _Usage(Exception):
    """The command line is incomplete (exit 2)."""


def _table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    return table(header, [[str(cell) for cell in row] for row in rows])


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / (1 << 20):.0f}Mi"


def _show_deployments(items: list[dict[str, Any]]) -> str:
    rows = []
    for d in items:
        spec = d["spec"]
        where = ", ".join(
            f"{p['pool_id']}@{p['host_id']}/{p['device']}"
            f"{'' if p['ready'] else ' (' + p['state'] + ')'}"
            for p in d["pools"]
        )
        rows.append(
            [
                d["name"],
                d["phase"],
                spec["model"],
                f"{spec['replicas']['min']}..{spec['replicas']['max']}",
                _mib((d.get("estimate") or {}).get("total")),
                where or "-",
            ]
        )
    text = _table(rows, ["NAME", "PHASE", "MODEL", "REPLICAS", "ESTIMATE", "POOLS"])
    for d in items:
        for reason in d["pending_reasons"]:
            text += (
                f"\n  {d['name']} pending: {reason['host_id']}/{reason['device_id']}: "
                f"{reason['reason']}"
            )
    return text


def _deploy(args: argparse.Namespace) -> Any:
    if args.action == "apply":
        try:  # every entry checked before the first is sent
            items = load_deployments(Path(args.target))
        except SettingsError as exc:
            raise _Usage(f"llorch deploy: {exc}") from None
        return [_call(args, "PUT", f"/v2/deployments/{name}", body) for name, body in items]
    if args.action == "ls":
        return _call(args, "GET", "/v2/deployments")["deployments"]
    if args.action == "show":
        return [_call(args, "GET", f"/v2/deployments/{args.target}")]
    _call(args, "DELETE", f"/v2/deployments/{args.target}")
    return []


def _pools(args: argparse.Namespace) -> Any:
    if args.action == "ls":
        return _call(args, "GET", "/v2/pools")["pools"]
    if args.action == "show":
        return [_call(args, "GET", f"/v2/pools/{args.target}")]
    if args.action == "reload":
        if not args.model:
            raise _Usage("llorch pools reload POOL MODEL: a model is required")
        # The answer comes when the new model serves (loading may take minutes); the
        # orchestrator bounds the wait, so this only covers its limit.
        result = _call(
            args, "POST", f"/v2/pools/{args.target}/reload", {"model": args.model}, 1900.0
        )
        print(result["message"], file=sys.stderr)
        return [_call(args, "GET", f"/v2/pools/{args.target}")]
    if args.action == "undrain":
        _call(args, "POST", f"/v2/pools/{args.target}/undrain")
        return []
    deadline_ms = 30_000 if args.deadline_ms is None else args.deadline_ms
    _call(args, "POST", f"/v2/pools/{args.target}/drain", {"deadline_ms": deadline_ms})
    return []


def _hosts(args: argparse.Namespace) -> Any:
    if args.action == "ls":
        return _call(args, "GET", "/v2/hosts")["hosts"]
    body: dict[str, Any] = {"cordoned": args.action == "cordon"}
    if args.device:
        body["device"] = args.device
    _call(args, "POST", f"/v2/hosts/{args.target}/cordon", body)
    return []


def _render(kind: str, items: list[dict[str, Any]]) -> str:
    if kind == "deploy":
        return _show_deployments(items)
    if kind == "pools":
        return _table(
            [
                [
                    p["pool_id"],
                    p["host_id"],
                    p["state"],
                    "yes" if p["ready"] else "no",
                    f"{p['slots_free']}/{p['slots_total']}",
                    p["model_id"],
                    p["engine"],
                    p["last_error"][:60],
                ]
                for p in items
            ],
            ["POOL", "HOST", "STATE", "READY", "FREE", "MODEL", "ENGINE", "LAST ERROR"],
        )
    rows = []
    for h in items:
        devices = "; ".join(
            f"{d['id']} {_mib(d['memory_free_bytes'])}/"
            f"{_mib(d['memory_total_bytes'])}{' cordoned' if d['cordoned'] else ''}"
            for d in h["devices"]
        )
        rows.append(
            [
                h["host_id"],
                "yes" if h["live"] else "no",
                "yes" if h["cordoned"] else "no",
                devices,
                ",".join(h["pools"]) or "-",
            ]
        )
    return _table(rows, ["HOST", "LIVE", "CORDONED", "DEVICES (free/total)", "POOLS"])


def _run(kind: str, args: argparse.Namespace) -> int:
    handler = {"deploy": _deploy, "pools": _pools, "hosts": _hosts}[kind]
    needs_target = args.action not in ("ls",)
    if needs_target and not args.target:
        print(f"llorch {kind} {args.action}: a target is required", file=sys.stderr)
        return EXIT_USAGE
    if getattr(args, "deadline_ms", None) is not None and args.action != "drain":
        print(f"llorch {kind} {args.action}: --deadline-ms is for drain only", file=sys.stderr)
        return EXIT_USAGE
    try:
        items = handler(args)
    except _Refused as exc:
        print(f"llorch: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except httpx.TransportError as exc:
        print(f"llorch: cannot reach {args.url}: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except _Usage as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    except (OSError, yaml.YAMLError, KeyError, AttributeError) as exc:
        print(f"llorch {kind}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(json.dumps(items, indent=2))
    elif items:
        print(_render(kind, items))
    return EXIT_OK


def add_parsers(commands: Any) -> None:
    actions = {
        "deploy": ("apply", "ls", "show", "rm"),
        "pools": ("ls", "show", "drain", "undrain", "reload"),
        "hosts": ("ls", "cordon", "uncordon"),
    }
    helps = {
        "deploy": "apply and inspect deployments",
        "pools": "list, show, drain, undrain and reload pools",
        "hosts": "list hosts; cordon and uncordon them",
    }
    for kind, choices in actions.items():
        parser = commands.add_parser(kind, help=helps[kind])
        parser.add_argument("action", choices=choices)
        parser.add_argument("target", nargs="?", help="file, name or id")
        connection_options(parser)
        parser.add_argument("--json", action="store_true")
        if kind == "pools":
            parser.add_argument("model", nargs="?", help="reload: the model to load")
            parser.add_argument(
                "--deadline-ms", type=int, default=None, help="drain: default 30000"
            )
        if kind == "hosts":
            parser.add_argument("--device", help="cordon only this device")
        parser.set_defaults(handler=lambda a, k=kind: _run(k, a))
