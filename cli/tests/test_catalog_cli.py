"""`llorch provision model` and `llorch catalog ...` (CLI-02, CLI-05), run through `main`."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from catalog_core import sha256_folder, write_tiny_hf_model, write_tiny_model
from llorch.__main__ import main
from llorch.progress import NarrationLines, Progress
from provisioners.testing import RangeFileServer


@pytest.fixture(scope="module")
def model_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return write_tiny_model(tmp_path_factory.mktemp("fixture") / "tiny.gguf").read_bytes()


@pytest.fixture
def server(model_bytes: bytes) -> Iterator[RangeFileServer]:
    with RangeFileServer({"tiny.gguf": model_bytes}) as running:
        yield running


def _catalog_json(state: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> object:
    assert main(["catalog", *argv, "--json", "--state-dir", str(state)]) == 0
    return json.loads(capsys.readouterr().out)


def test_provision_model_narrates_its_steps_and_the_catalog_lists_the_entry(
    tmp_path: Path, server: RangeFileServer, model_bytes: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    digest = hashlib.sha256(model_bytes).hexdigest()
    url = server.url("tiny.gguf")
    argv = ["provision", "model", url, "--sha256", digest, "--state-dir", str(tmp_path)]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert out.startswith("tiny: llama F32") and digest in out
    assert "\r" not in err and "%|" not in err  # stderr is not a terminal here: no bar
    for action in ("download", "verify", "inspect", "publish", "register"):
        assert f"llorch: {action}" in err
    listed = _catalog_json(tmp_path, capsys, "ls")
    assert isinstance(listed, list) and len(listed) == 1
    assert (listed[0]["id"], listed[0]["ref"], listed[0]["sha256"]) == ("tiny", url, digest)
    assert Path(listed[0]["local_path"]).is_relative_to(tmp_path / "models")
    assert main(["catalog", "ls", "--state-dir", str(tmp_path)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["ID", "STATE", "SIZE", "ARCH", "QUANT", "CTX", "REF"]
    assert table[1].split()[:2] == ["tiny", "Active"] and table[1].endswith(url)


def test_a_hugging_face_folder_is_provisioned_in_place_listed_and_verified(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "mine"
    folder = write_tiny_hf_model(root / "tiny-hf")
    state = ["--state-dir", str(tmp_path / "state")]
    argv = ["provision", "model", f"file:{folder}", "--root", str(root), *state]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("tiny-hf: LlamaForCausalLM F32") and sha256_folder(folder) in out
    entries = _catalog_json(tmp_path / "state", capsys, "ls")
    assert isinstance(entries, list) and len(entries) == 1
    listed = entries[0]
    assert (listed["id"], listed["local_path"]) == ("tiny-hf", str(folder))
    assert listed["format"] == "safetensors" and listed["sha256"] == sha256_folder(folder)
    verified = _catalog_json(tmp_path / "state", capsys, "verify", "tiny-hf")
    assert isinstance(verified, dict) and verified["ok"] is True
    (folder / "tokenizer_config.json").write_text("{}")
    assert main(["catalog", "verify", "tiny-hf", "--json", *state]) != 0
    changed = json.loads(capsys.readouterr().out)
    assert changed["ok"] is False and changed["actual"] == sha256_folder(folder)


def test_verify_retire_and_rm_manage_an_entry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "mine"
    root.mkdir()
    model = write_tiny_model(root / "tiny.gguf")
    state = ["--state-dir", str(tmp_path / "state")]
    assert main(["provision", "model", f"file:{model}", "--root", str(root), *state]) == 0
    capsys.readouterr()
    assert _catalog_json(tmp_path / "state", capsys, "verify", "tiny") == {
        "id": "tiny",
        "ok": True,
        "expected": hashlib.sha256(model.read_bytes()).hexdigest(),
        "actual": hashlib.sha256(model.read_bytes()).hexdigest(),
    }
    shown = _catalog_json(tmp_path / "state", capsys, "show", "tiny")
    assert isinstance(shown, dict) and shown["kind"] == "model" and shown["layers"] == 2
    model.write_bytes(model.read_bytes()[:-1] + b"\x01")
    assert main(["catalog", "verify", "tiny", *state]) == 1
    assert "MISMATCH tiny" in capsys.readouterr().out
    retired = _catalog_json(tmp_path / "state", capsys, "retire", "tiny")
    assert isinstance(retired, dict) and retired["lifecycle"] == "Retired"
    assert main(["catalog", "rm", "tiny", "--purge", *state]) == 0
    assert "removed model tiny" in capsys.readouterr().out
    assert model.exists()  # outside the managed models folder: never purged
    assert _catalog_json(tmp_path / "state", capsys, "ls") == []
    assert main(["catalog", "show", "tiny", *state]) == 1
    assert "no engine with id 'tiny'" in capsys.readouterr().err


def test_a_file_ref_outside_the_roots_fails_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = write_tiny_model(tmp_path / "tiny.gguf")
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    argv = ["provision", "model", f"file:{allowed}/../tiny.gguf", "--root", str(allowed)]
    assert main([*argv, "--state-dir", str(tmp_path / "state")]) == 1
    assert "outside the allowed roots" in capsys.readouterr().err
    assert model.exists()


def test_a_dry_run_prints_the_plan_and_fetches_nothing(
    tmp_path: Path, server: RangeFileServer, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["provision", "model", server.url("tiny.gguf"), "--dry-run", "--json"]
    assert main([*argv, "--state-dir", str(tmp_path)]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert [step["action"] for step in plan["steps"]] == [
        "download",
        "verify",
        "inspect",
        "publish",
        "register",
    ]
    assert server.requests == []


def test_catalog_ls_json_runs_as_a_program(tmp_path: Path) -> None:
    env = {**os.environ, "LLORCH_STATE_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "llorch", "catalog", "ls", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert (done.returncode, json.loads(done.stdout)) == (0, [])
    assert (tmp_path / "catalog.sqlite").exists()


def test_a_bad_sha256_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["provision", "model", "https://example.org/x.gguf", "--sha256", "abc"])
    assert caught.value.code == 2 and "64 hex digits" in capsys.readouterr().err


def test_the_download_bar_shows_percent_bytes_rate_and_eta_on_a_terminal_only() -> None:
    drawn = io.StringIO()
    bar = Progress("download", stream=drawn, enabled=True)
    for done in (0, 512 << 10, 1 << 20, 2 << 20):
        bar(done, 2 << 20)
    text = drawn.getvalue()
    assert "download" in text and "100%" in text and "2.00M" in text
    assert "<" in text and "/s]" in text  # elapsed<remaining (the ETA) and the rate
    assert text.endswith("\n")  # the finished bar ends its line
    quiet = io.StringIO()  # not a terminal: nothing drawn
    bar = Progress("download", stream=quiet)
    bar(1, 2)
    bar(2, 2)
    assert not bar.enabled and quiet.getvalue() == ""


def test_a_resumed_download_starts_its_bar_at_the_bytes_already_there() -> None:
    drawn = io.StringIO()
    bar = Progress("download", stream=drawn, enabled=True)
    bar(1 << 20, 4 << 20)
    bar(4 << 20, 4 << 20)
    assert "25%" in drawn.getvalue() and "100%" in drawn.getvalue()


def test_narrated_steps_are_printed_one_line_each(capsys: pytest.CaptureFixture[str]) -> None:
    handler = NarrationLines()
    record = logging.LogRecord("provisioners", logging.INFO, __file__, 1, "x", None, None)
    record.action, record.target = "download", "https://example.org/x.gguf"
    handler.emit(record)
    assert capsys.readouterr().err == "llorch: download     https://example.org/x.gguf\n"
