"""pool-managerd started with a bad file exits 2 at once with one line on stderr naming
the file, the key path and what was expected (no traceback, no engine started)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_pool_managerd_with_a_bad_file_exits_2_with_one_line_on_stderr(tmp_path: Path) -> None:
    path = tmp_path / "pool-managerd.yaml"
    path.write_text(
        "orchestrator: 127.0.0.1:8090\n"
        f"state_dir: {tmp_path / 'state'}\n"
        "pools:\n"
        "  - {id: a, engine: mock}\n"
        "  - {id: b, engine: mock, aliases: default}\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "pool_managerd", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,  # the deadline: a hang fails here
        env={**os.environ, "LLORCH_JOIN_TOKEN": "t"},
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"pool-managerd: invalid configuration: {path}: pools[1].aliases: expected a list, "
        "got 'default'"
    ]
    assert not (tmp_path / "state").exists()
