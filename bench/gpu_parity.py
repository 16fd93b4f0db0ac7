"""CPU-vs-GPU parity of llama.cpp on one GGUF: greedy top-1 agreement and log-probabilities.

    python -m bench.gpu_parity --model M.gguf [--tokens 256] [--gpu-layers 999] [--out F]

Two child processes load the same model through llama-cpp-python (the in-process
engine's library): `cpu` with no GPU visible (`CUDA_VISIBLE_DEVICES=""`, no layer
offloaded) and `gpu` with `--gpu-layers` layers on the first GPU. Each generates
`--tokens` tokens greedily from the same prompt (free-running); then both score the CPU's
sequence in one teacher-forced pass (prompt + tokens, logits at every position), so
positions compare on the same prefix and one early flip does not decide the rest. The
report gives, over the `--tokens` positions of that pass: top-1 (argmax) agreement,
the largest absolute difference of any token's log-probability, the largest difference
of the CPU's top-1 token's log-probability, the smallest top-1 margin where the two
disagree; and for the free-running streams, the number of equal tokens and the first
position where they part.

Runs anywhere: on a machine without a GPU (or a CPU build of llama.cpp) both sides run
on the CPU and agree exactly, which checks the script, not the GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if "--child" in sys.argv:  # llama.cpp's libraries before numpy's (worker/load_order.py)
    import llama_cpp  # noqa: F401

import numpy as np

PROMPT = "Once upon a time, in a village by the sea, there lived"


def _log_softmax(rows: np.ndarray) -> np.ndarray:
    rows = rows.astype(np.float64)
    top = rows.max(axis=1, keepdims=True)
    return rows - top - np.log(np.exp(rows - top).sum(axis=1, keepdims=True))


def _child(args: argparse.Namespace) -> int:
    """One side: greedy generation, then a teacher-forced pass over `--forced`'s tokens."""
    from llama_cpp import Llama

    prompt_text = PROMPT.encode()
    started = time.monotonic()
    llama = Llama(
        str(args.model),
        n_ctx=args.ctx,
        n_batch=args.ctx,
        n_ubatch=min(args.ctx, 512),
        n_gpu_layers=args.gpu_layers,
        logits_all=True,
        seed=1,
        verbose=False,
    )
    loaded_s = time.monotonic() - started
    prompt = llama.tokenize(prompt_text, add_bos=True)
    llama.eval(prompt)
    generated: list[int] = []
    started = time.monotonic()
    for _ in range(args.tokens):
        token = int(np.argmax(llama.scores[llama.n_tokens - 1]))
        generated.append(token)
        llama.eval([token])
    generate_s = time.monotonic() - started
    forced = json.loads(args.forced.read_text()) if args.forced else generated
    llama.reset()
    llama.eval(prompt + forced)
    first = len(prompt) - 1  # the row that predicts the first generated token
    rows = np.array(llama.scores[first : first + len(forced)], dtype=np.float32)
    np.save(args.rows, rows)
    result = {
        "side": args.side,
        "prompt_tokens": len(prompt),
        "generated": generated,
        "load_s": round(loaded_s, 2),
        "tokens_per_s": round(args.tokens / generate_s, 1) if generate_s else None,
        "vocab": int(rows.shape[1]),
    }
    args.result.write_text(json.dumps(result))
    llama.close()
    return 0


def _run_side(
    side: str, model: Path, tokens: int, gpu_layers: int, scratch: Path, forced: Path | None
) -> dict[str, Any]:
    env = dict(os.environ)
    if side == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # a CUDA build then finds no device: all on the CPU
    command = [
        sys.executable,
        "-m",
        "bench.gpu_parity",
        "--model",
        str(model),
        "--tokens",
        str(tokens),
        "--child",
        side,
        "--gpu-layers",
        str(gpu_layers if side == "gpu" else 0),
        "--rows",
        str(scratch / f"{side}.npy"),
        "--result",
        str(scratch / f"{side}.json"),
    ]
    if forced is not None:
        command += ["--forced", str(forced)]
    subprocess.run(command, check=True, env=env, cwd=Path(__file__).resolve().parent.parent)
    result: dict[str, Any] = json.loads((scratch / f"{side}.json").read_text())
    result["rows"] = np.load(scratch / f"{side}.npy")
    return result


def compare(cpu_rows: np.ndarray, gpu_rows: np.ndarray) -> dict[str, Any]:
    """Parity of two sides' logits over the same positions (rows: positions × vocab)."""
    cpu, gpu = _log_softmax(cpu_rows), _log_softmax(gpu_rows)
    cpu_top, gpu_top = cpu.argmax(axis=1), gpu.argmax(axis=1)
    agree = cpu_top == gpu_top
    positions = np.arange(len(cpu))
    top_diff = np.abs(cpu[positions, cpu_top] - gpu[positions, cpu_top])
    ordered = np.sort(cpu, axis=1)
    margins = ordered[:, -1] - ordered[:, -2] if cpu.shape[1] > 1 else np.zeros(len(cpu))
    return {
        "positions": len(cpu),
        "top1_agreement": round(float(agree.mean()), 4),
        "top1_disagreements": [int(i) for i in np.flatnonzero(~agree)],
        "max_abs_logprob_diff_any_token": float(np.abs(cpu - gpu).max()),
        "max_abs_logprob_diff_top1": float(top_diff.max()),
        "mean_abs_logprob_diff_top1": float(top_diff.mean()),
        "cpu_top1_margin_min_where_disagree": (
            float(margins[~agree].min()) if (~agree).any() else None
        ),
    }


def _free_running(cpu: list[int], gpu: list[int]) -> dict[str, Any]:
    parted = next((i for i, (a, b) in enumerate(zip(cpu, gpu, strict=True)) if a != b), None)
    return {
        "equal_tokens": sum(a == b for a, b in zip(cpu, gpu, strict=True)),
        "first_divergence": parted,
    }


def parity(model: Path, tokens: int, gpu_layers: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="llorch-parity-") as folder:
        scratch = Path(folder)
        cpu = _run_side("cpu", model, tokens, 0, scratch, None)
        forced = scratch / "forced.json"
        forced.write_text(json.dumps(cpu["generated"]))
        gpu = _run_side("gpu", model, tokens, gpu_layers, scratch, forced)
    return {
        "model": str(model),
        "tokens": tokens,
        "gpu_layers": gpu_layers,
        "prompt": PROMPT,
        "teacher_forced": compare(cpu.pop("rows"), gpu.pop("rows")),
        "free_running": _free_running(cpu["generated"], gpu["generated"]),
        "cpu": {k: v for k, v in cpu.items() if k != "generated"},
        "gpu": {k: v for k, v in gpu.items() if k != "generated"},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--gpu-layers", type=int, default=999)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", choices=("cpu", "gpu"), help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--forced", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.ctx = 64 * (-(-(args.tokens + 64) // 64))  # prompt + tokens, padded
    if args.child:
        args.side = args.child
        return _child(args)
    report = parity(args.model, args.tokens, args.gpu_layers)
    text = json.dumps(report, indent=1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    forced, free = report["teacher_forced"], report["free_running"]
    print(
        f"parity over {forced['positions']} tokens: top-1 agreement "
        f"{forced['top1_agreement']:.4f}, max |Δ logprob| any token "
        f"{forced['max_abs_logprob_diff_any_token']:.4g}, top-1 token "
        f"{forced['max_abs_logprob_diff_top1']:.4g}; free-running: "
        f"{free['equal_tokens']}/{args.tokens} equal, first divergence "
        f"{free['first_divergence']}; CPU {report['cpu']['tokens_per_s']} tok/s, "
        f"GPU {report['gpu']['tokens_per_s']} tok/s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
