"""orchestratord started with a bad file exits 2 at once with one line on stderr naming
the file, the key and what was expected (no traceback, nothing served)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_orchestratord_with_a_bad_file_exits_2_with_one_line_on_stderr(tmp_path: Path) -> None:
    path = tmp_path / "orchestratord.yaml"
    path.write_text("http_prot: 9000\nrouting: fastest\n")
    done = subprocess.run(
        [sys.executable, "-m", "orchestratord", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,  # the deadline: a hang fails here
        env={**os.environ, "LLORCH_JOIN_TOKEN": "t"},
        cwd=tmp_path,
    )
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert lines == [
        f"orchestratord: invalid configuration: {path}: routing: expected 'predicted' or "
        "'least_loaded', got 'fastest'; http_prot: unknown setting (did you mean 'http_port'?)"
    ]
