"""The fake TGI server as a process (a fake, for tests only): what the image
`llorch/fake-tgi:test` runs in place of TGI, which cannot run on the project's machines
(no registry to pull its image from, no GPU).

    python -m worker_adapters.testing.fake_tgi_main --model-id /model --port 80 ...

It takes the launcher flags pool-managerd passes to TGI (`--model-id`, `--hostname`,
`--port`, `--max-total-tokens`, `--max-input-tokens`, `--max-concurrent-requests`) and
refuses any other, so a launch TGI would not accept fails here too; `--model-id` must be
a folder holding `config.json` (the mounted model). The API key is read from `API_KEY`,
as TGI's launcher does. It serves `FakeTgiServer` (its routes, auth and health as
TGI's) and answers every generation with the recorded TGI stream
(`tgi_transcripts.recorded_tgi_generate`), paced so a stream takes a moment. SIGTERM
and SIGINT stop it (it may be PID 1 in its container).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from dataclasses import replace
from pathlib import Path

from worker_adapters.testing.fake_engines import FakeTgiServer
from worker_adapters.testing.tgi_transcripts import recorded_tgi_generate

__all__ = ["main", "parse_args"]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fake-tgi", description=__doc__)
    parser.add_argument("--model-id", required=True)
    parser.add_argument("--hostname", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "80")))
    parser.add_argument("--max-total-tokens", type=int, default=4096)
    parser.add_argument("--max-input-tokens", type=int, default=None)
    parser.add_argument("--max-concurrent-requests", type=int, default=128)
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    server = FakeTgiServer(api_key=os.environ.get("API_KEY", ""))
    server.model_id = args.model_id
    server.max_total_tokens = args.max_total_tokens
    server.max_concurrent_requests = args.max_concurrent_requests
    server.default = replace(recorded_tgi_generate("recorded_tgi_simple"), pace_s=0.05)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    url = await server.start(args.hostname, args.port)
    print(f"fake TGI (recorded transcripts) serving {args.model_id} on {url}", flush=True)
    await stop.wait()
    await server.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if not (Path(args.model_id) / "config.json").is_file():
        print(f"fake TGI: {args.model_id} holds no config.json", file=sys.stderr)
        return 2
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
