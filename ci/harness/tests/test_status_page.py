"""The orchestrator's status page (OBS-04), over a real cluster: a pool manager running the
tiny fixture model, keys required.

The browser test opens the page in Debian's headless Chromium (installed when missing),
gives it a client key through the page's own form, waits for the pool to show ready,
submits jobs over HTTP and waits until this key's job shows as completed while another
key's job never shows; it saves a screenshot under `test-output/status-page/` (printed).
The HTTP test reads the snapshot the page reads: who sees which jobs, the stream of
snapshots, the page and its files open to all and holding no data.
"""

from __future__ import annotations

import hashlib
import json
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from ci_harness import secret_scan
from ci_harness.browser import CHROMEDRIVER, CHROMIUM, chromium_arguments, ensure_chromium
from ci_harness.cluster import Cluster, sse_events, tiny_pool, wait_for
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

pytestmark = pytest.mark.integration
Factory = Callable[..., Cluster]
OUTPUT = Path(__file__).resolve().parents[3] / "test-output" / "status-page"
PAGE_WAIT_S = 30.0


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _keys() -> tuple[dict[str, str], list[dict[str, str]]]:
    """Three keys (admin `operator`, clients `app` and `other`): their tokens by name, and
    the orchestrator's `api_keys`."""
    tokens = {name: secret_scan.new_api_key(f"{name} key") for name in ("operator", "app", "other")}
    config = [
        {"name": "operator", "key_sha256": _digest(tokens["operator"]), "role": "admin"},
        {"name": "app", "key_sha256": _digest(tokens["app"]), "role": "client"},
        {"name": "other", "key_sha256": _digest(tokens["other"]), "role": "client"},
    ]
    return tokens, config


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _finished_job(cluster: Cluster, token: str, max_tokens: int = 8) -> str:
    """Submit a job with this key and read its stream to the end; its id."""
    with httpx.Client(base_url=cluster.url, timeout=30, headers=_bearer(token)) as http:
        job = http.post(
            "/v2/tasks", json={"model": "default", "prompt": "Once", "max_tokens": max_tokens}
        )
        assert job.status_code == 202, job.text
        task_id = str(job.json()["task_id"])
        with http.stream("GET", f"/v2/tasks/{task_id}/events") as stream:
            names = [name for _, name, _ in sse_events(stream.iter_lines())]
        assert names[-1] == "end", names
        return task_id


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    ensure_chromium()
    options = Options()
    options.binary_location = CHROMIUM
    for argument in chromium_arguments():
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.mark.timeout(600, func_only=False)  # a fresh machine installs Chromium first
def test_the_page_in_headless_chromium_shows_the_pool_ready_and_the_keys_own_job_finished(
    cluster_factory: Factory, tiny_model: Path, browser: WebDriver
) -> None:
    tokens, config = _keys()
    cluster = cluster_factory(
        {"host-a": [tiny_pool("p1", tiny_model)]},
        headers=_bearer(tokens["operator"]),
        api_keys=config,
    )
    wait = WebDriverWait(browser, PAGE_WAIT_S, poll_frequency=0.1)

    browser.get(f"{cluster.url}/ui")
    form = wait.until(lambda d: d.find_element(By.ID, "key-form").is_displayed())
    assert form, "without a key the page asks for one"
    reason = browser.find_element(By.ID, "key-reason").text
    assert "UNAUTHORIZED" in reason, reason
    browser.find_element(By.ID, "key-input").send_keys(tokens["app"])
    browser.find_element(By.CSS_SELECTOR, "#key-form button[type=submit]").click()

    ready = 'tr[data-pool-id="p1"][data-ready="true"]'
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ready))
    hosts = browser.find_element(By.ID, "hosts").text
    assert "host-a" in hosts and re.search(r"[\d.]+ [KMGT]iB / [\d.]+ [KMGT]iB", hosts), hosts
    assert browser.find_element(By.ID, "viewer").text == "key app (its own jobs)"

    others = _finished_job(cluster, tokens["other"])  # ended before ours is submitted
    mine = _finished_job(cluster, tokens["app"])
    done = f'tr[data-task-id="{mine}"][data-state="completed"]'
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, done))
    row = browser.find_element(By.CSS_SELECTOR, done)
    cells = [td.text for td in row.find_elements(By.TAG_NAME, "td")]
    assert cells[1] == "default" and cells[3] == "p1", cells  # model, pool
    assert cells[6] != "–" and cells[7] != "–", cells  # first token, decode: timed
    assert cells[9].endswith("/ 8"), cells  # tokens in / out
    # The snapshot that shows our job is newer than the other key's end: never shown.
    assert not browser.find_elements(By.CSS_SELECTOR, f'tr[data-task-id="{others}"]')
    assert browser.find_element(By.ID, "connection").text == "live"
    assert tokens["app"] not in browser.current_url

    OUTPUT.mkdir(parents=True, exist_ok=True)
    shot = OUTPUT / "status-page.png"
    assert browser.save_screenshot(str(shot)), "Chromium wrote no screenshot"
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    print(f"status page screenshot: {shot}")


def _snapshot(http: httpx.Client, token: str | None) -> httpx.Response:
    return http.get("/v2/status", headers=_bearer(token) if token else {})


def _stream_snapshots(cluster: Cluster, token: str, count: int) -> list[dict[str, Any]]:
    snapshots = []
    with (
        httpx.Client(base_url=cluster.url, timeout=30, headers=_bearer(token)) as http,
        http.stream("GET", "/v2/status/events") as stream,
    ):
        assert stream.status_code == 200, stream.read()
        assert stream.headers["content-type"].startswith("text/event-stream")
        for _, name, data in sse_events(stream.iter_lines()):
            assert name == "status"
            snapshots.append(data)
            if len(snapshots) == count:
                break
    return snapshots


def test_the_status_snapshot_shows_a_client_key_only_its_own_jobs_and_an_admin_all(
    cluster_factory: Factory, tiny_model: Path
) -> None:
    tokens, config = _keys()
    cluster = cluster_factory(
        {"host-a": [tiny_pool("p1", tiny_model)]},
        headers=_bearer(tokens["operator"]),
        api_keys=config,
    )
    cluster.wait_ready(["p1"])
    mine = _finished_job(cluster, tokens["app"])
    others = _finished_job(cluster, tokens["other"])

    with httpx.Client(base_url=cluster.url, timeout=30) as http:
        refused = _snapshot(http, None)
        assert refused.status_code == 401 and refused.json()["code"] == "UNAUTHORIZED"
        assert _snapshot(http, "not-a-key").status_code == 401

        app = _snapshot(http, tokens["app"]).json()
        assert app["viewer"] == {"api_key": "app", "sees_all_jobs": False}
        assert [j["task_id"] for j in app["jobs"]] == [mine]
        job = app["jobs"][0]
        assert job["state"] == "completed" and job["owner"] == "app" and job["pool_id"] == "p1"
        assert job["tokens_out"] == 8 and job["error_code"] is None, job
        times = [job[k] for k in ("created_at_ms", "started_at_ms", "first_token_at_ms")]
        assert times == sorted(times) and job["finished_at_ms"] >= times[-1], job
        assert job["total_ms"] == job["finished_at_ms"] - job["created_at_ms"], job

        admin = _snapshot(http, tokens["operator"]).json()
        assert admin["viewer"] == {"api_key": "operator", "sees_all_jobs": True}
        assert {j["task_id"] for j in admin["jobs"]} == {mine, others}
        # Hosts and deployments read as their own routes answer them.
        hosts = http.get("/v2/hosts", headers=_bearer(tokens["app"])).json()["hosts"]
        assert [h["host_id"] for h in app["hosts"]] == [h["host_id"] for h in hosts] == ["host-a"]
        assert app["hosts"][0]["devices"] == hosts[0]["devices"]
        assert app["deployments"] == []
        pool = app["pools"][0]
        assert pool["pool_id"] == "p1" and pool["ready"] and pool["state"] == "ready", pool
        assert app["queue"]["depth"] == 0 and app["queue"]["by_model"] == []
        shown = json.dumps(admin)
        assert tokens["app"] not in shown and _digest(tokens["app"]) not in shown

        # Tokens/s: the rate of tokens streamed since the previous snapshot.
        longer = _finished_job(cluster, tokens["app"], max_tokens=32)
        after = _snapshot(http, tokens["app"]).json()
        assert after["tokens_per_s"] > 0 and after["pools"][0]["tokens_per_s"] > 0, after

        # The page and its files: open to all, no data, nothing fetched from elsewhere.
        for path in ("/", "/ui"):
            page = http.get(path)
            assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
            assert "default-src 'self'" in page.headers["content-security-policy"]
            assert "/ui/status.js" in page.text and "://" not in page.text
            assert mine not in page.text
        script = http.get("/ui/status.js")
        assert script.status_code == 200 and "text/javascript" in script.headers["content-type"]
        assert "/v2/status/events" in script.text
        assert http.get("/ui/status.css").headers["content-type"].startswith("text/css")
        missing = http.get("/ui/secrets.txt")
        assert missing.status_code == 404 and missing.json()["code"] == "NOT_FOUND"

    snapshots = _stream_snapshots(cluster, tokens["app"], 2)
    assert snapshots[0]["generated_at_ms"] < snapshots[1]["generated_at_ms"]
    assert [j["task_id"] for j in snapshots[1]["jobs"]] == [longer, mine]  # newest first

    # `count` ends the stream after that many snapshots; a wrong one is a typed 400.
    with httpx.Client(base_url=cluster.url, timeout=30, headers=_bearer(tokens["app"])) as http:
        with http.stream("GET", "/v2/status/events", params={"count": 2}) as stream:
            assert stream.status_code == 200
            counted = [name for _, name, _ in sse_events(stream.iter_lines())]  # to its end
        assert counted == ["status", "status"]
        for wrong in ({"count": "0"}, {"count": "two"}, {"every": "1"}):
            refused = http.get("/v2/status/events", params=wrong)
            assert refused.status_code == 400, (wrong, refused.text)
            assert refused.json()["code"] == "INVALID_PARAMS"


def test_an_open_status_stream_ends_when_the_orchestrator_shuts_down(
    cluster_factory: Factory,
) -> None:
    cluster = cluster_factory({"host-a": []})  # no keys (loopback): every job is shown
    with cluster.client() as http:  # the manager is up (its signal handlers too)
        wait_for(lambda: http.get("/v2/status").json()["hosts"], "host-a to join")
    with (
        httpx.Client(base_url=cluster.url, timeout=30) as http,
        http.stream("GET", "/v2/status/events") as stream,
    ):
        events = sse_events(stream.iter_lines())
        _, name, first = next(events)
        assert name == "status" and first["viewer"] == {"api_key": None, "sees_all_jobs": True}
        began = time.monotonic()
        cluster.processes["orchestratord"].send_signal(signal.SIGTERM)
        rest = list(events)  # ends when the server closes the stream (or the read times out)
        held_s = time.monotonic() - began
    assert all(name == "status" for _, name, _ in rest)
    assert held_s < 4.0, f"the stream held the shutdown up for {held_s:.1f} s"
    assert cluster.stop_process("orchestratord") == 0
