"""Narration (OBS-02, SEC-04): a job's story in the logs, and no secret anywhere in them."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from ci_harness import secret_scan
from ci_harness.cluster import Cluster, tiny_pool, wait_for

pytestmark = pytest.mark.integration
Factory = Callable[..., Cluster]
CLIENT_KEY = "sk-narration-secret-0001"


def lines(path: Path) -> list[dict[str, object]]:
    found = []
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            found.append(json.loads(line))
    return found


def test_a_jobs_story_is_narrated_in_order_and_no_secret_reaches_a_log(
    cluster_factory: Factory, tiny_model: Path
) -> None:
    keys = [{"name": "narrator", "key_sha256": hashlib.sha256(CLIENT_KEY.encode()).hexdigest()}]
    auth = {"Authorization": f"Bearer {CLIENT_KEY}", "X-Correlation-Id": "story-1"}
    cluster = cluster_factory(
        {"host-a": [tiny_pool("p1", tiny_model)]}, headers=auth, api_keys=keys
    )
    task = cluster.submit({"model": "default", "prompt": "tell", "max_tokens": 5}).json()
    assert cluster.events(task["task_id"])[-1].name == "end"

    def story_told() -> list[dict[str, object]] | None:
        # Info lines are written in batches a moment after they are logged (DeferredLines).
        told = [
            line
            for line in lines(cluster.root / "orchestratord.log")
            if line.get("task_id") == task["task_id"]
        ]
        return told if any(line["action"] == "stream.end" for line in told) else None

    story: list[dict[str, object]] = wait_for(story_told, "the stream.end line", timeout_s=10)
    assert [line["action"] for line in story] == ["admit", "place", "stream.start", "stream.end"]
    for line in story:
        assert line["actor"] == "orchestratord" and line["target"] == task["task_id"]
        assert line["correlation_id"] == "story-1" and line["ts"] and line["level"]
        first_word = str(line["human"]).split()[0]
        assert first_word.endswith("s"), line["human"]  # present tense: "admits", "places"
    assert story[1]["pool_id"] == "p1"
    manager_actions = {
        line.get("action") for line in lines(cluster.root / "pool-managerd-host-a.log")
    }
    assert {"provision", "lifecycle", "join"} <= manager_actions

    (worker_pid,) = cluster.worker_pids("host-a", "p1")
    environ = Path(f"/proc/{worker_pid}/environ").read_bytes().split(b"\0")
    pool_key = next(
        v.split(b"=", 1)[1] for v in environ if v.startswith(b"LLORCH_WORKER_API_KEY=")
    ).decode()
    registered = secret_scan.registered()  # for the session's scan of every log (last test)
    assert registered[cluster.token] == "join token" and registered[CLIENT_KEY] == "API key"
    assert registered[pool_key] == "engine key (LLORCH_WORKER_API_KEY)"
    cluster.stop()
    secrets = {"join token": cluster.token, "client key": CLIENT_KEY, "pool key": pool_key}
    for log in [*cluster.root.glob("*.log"), *cluster.root.glob("*/logs/*.log")]:
        text = log.read_text(errors="replace")
        for name, secret in secrets.items():
            assert secret not in text, f"the {name} appears in {log}"


def test_the_pretty_format_is_one_readable_line_per_event(tmp_path: Path) -> None:
    code = (
        "import logging; from specs.narration import configure_logging; "
        "configure_logging('demo'); logging.getLogger('x').info('places task %s', 'abc', "
        "extra={'action': 'place', 'task_id': 'abcdef0123', 'pool_id': 'p1'})"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"LLORCH_LOG_FORMAT": "pretty", "PATH": "/usr/bin"},
        check=True,
    )
    line = result.stderr.strip()
    assert " demo place " in line and "[task abcdef01, pool p1] places task abc" in line
    assert not line.startswith("{")
