"""`llorch up` on its embedded default model (CLI-01, TST-05): the README's run command.

Starts the real one-machine platform on Gemma 3 270M (from the PyPI package), runs the
`curl -N` example it prints, checks the answer is real inference (the model continues a
freshly shuffled word list it was shown), then stops it with Ctrl-C.
"""

from __future__ import annotations

import json
import queue
import random
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import psutil
import pytest
from ci_harness.cluster import parse_events

pytestmark = pytest.mark.integration
WORDS = [
    "apple",
    "river",
    "candle",
    "garden",
    "silver",
    "window",
    "orange",
    "thunder",
    "pillow",
    "forest",
    "rocket",
    "marble",
    "yellow",
    "castle",
    "dolphin",
    "lemon",
]


def _lines(stream: object, sink: queue.Queue[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        sink.put(line.rstrip("\n"))


def _printed_example(lines: queue.Queue[str]) -> tuple[str, str]:
    url = command = ""
    while not command:
        line = lines.get(timeout=600)
        if line.startswith("llorch is up: "):
            url = line.removeprefix("llorch is up: ").strip()
        elif line.strip().startswith("curl -N"):
            command = line.strip()
    return url, command


def test_llorch_up_serves_the_default_model_and_its_curl_example_streams_real_text(
    tmp_path: Path,
) -> None:
    assert shutil.which("curl"), "curl is needed to run the printed example"
    up = subprocess.Popen(
        [sys.executable, "-m", "llorch", "up", "--port", "0", "--state-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_lines, args=(up.stdout, lines), daemon=True).start()
    try:
        url, command = _printed_example(lines)
        result = subprocess.run(
            shlex.split(command), capture_output=True, text=True, timeout=120, check=True
        )
        events = list(parse_events(iter(result.stdout.splitlines())))
        names = [e.name for e in events]
        assert names[0] == "started" and names[-1] == "end", names
        text = "".join(e.data["t"] for e in events if e.name == "token")
        assert names.count("token") >= 3 and sum(c.isalpha() for c in text) >= 10, text
        assert events[0].data["model_digest"] == (
            "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
        )

        words = random.sample(WORDS, 4)
        prompt = "List: " + ", ".join(words * 3) + ", " + ", ".join(words[:2]) + ","
        body = {"model": "default", "prompt": prompt, "max_tokens": 4, "temperature": 0}
        answer = httpx.post(
            f"{url}/v2/tasks", json=body, timeout=60, headers={"Accept": "text/event-stream"}
        )
        tokens = [
            json.loads(line.removeprefix("data: "))["t"]
            for line in answer.text.splitlines()
            if line.startswith('data: {"t"')
        ]
        assert "".join(tokens).strip().startswith(words[2]), (words, tokens)
    finally:
        workers = list(psutil.Process(up.pid).children(recursive=True))
        up.send_signal(signal.SIGINT)
        code = up.wait(timeout=60)
    assert code == 0
    assert not [p for p in workers if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
