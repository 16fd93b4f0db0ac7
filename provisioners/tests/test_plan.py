"""The pure model planner (PRV-03): steps from a ref and catalog facts, no I/O."""

from __future__ import annotations

import ast
from dataclasses import replace
from pathlib import Path

import catalog_core.entries
import catalog_core.refs
import provisioners.errors
import provisioners.plan
import pytest
from catalog_core import FileRef, HfRef, HttpRef, ModelEntry, parse_model_ref
from hypothesis import given
from hypothesis import strategies as st
from provisioners.plan import (
    Download,
    HubDownload,
    LocalFile,
    ModelFacts,
    PlanSettings,
    Publish,
    ReadMetadata,
    Register,
    ReuseEntry,
    VerifyDigest,
    candidate_model_id,
)

from provisioners import RefRefused, RegistrationFailed, SourceNotFound, plan_model

SETTINGS = PlanSettings(models_dir="/state/models", allowed_roots=("/srv/models",))
URL = "https://example.org/m/Tiny-Q4_K_M.gguf?sig=x"
DIGEST = "ab" * 32


def _entry(ref: str, **changes: object) -> ModelEntry:
    entry = ModelEntry(
        id="tiny-q4_k_m", ref=ref, local_path="/state/models/x.gguf", sha256=DIGEST, size=100
    )
    return replace(entry, **changes)  # type: ignore[arg-type]


def test_a_url_is_downloaded_verified_inspected_published_then_registered() -> None:
    plan = plan_model(parse_model_ref(URL), ModelFacts(), SETTINGS, expected_sha256=DIGEST)
    kinds = [type(step) for step in plan.steps]
    assert kinds == [Download, VerifyDigest, ReadMetadata, Publish, Register]
    download, verify, _, publish, register = plan.steps
    assert isinstance(download, Download) and isinstance(verify, VerifyDigest)
    assert isinstance(publish, Publish) and isinstance(register, Register)
    assert plan.local_path.startswith("/state/models/https/")
    assert plan.local_path.endswith("/Tiny-Q4_K_M.gguf")
    assert download.part_path == plan.local_path + ".part" == publish.source
    assert verify.expected_sha256 == DIGEST and download.part_path in verify.discard
    assert (register.model_id, register.local_path) == ("tiny-q4_k_m", plan.local_path)
    assert download.target == "https://example.org/m/Tiny-Q4_K_M.gguf"  # no query in logs


def test_a_hub_file_is_staged_then_published_under_its_repo_and_revision() -> None:
    ref = HfRef("org/repo", "q4/tiny.gguf", "v1")
    plan = plan_model(ref, ModelFacts(), SETTINGS)
    fetch = plan.steps[0]
    assert isinstance(fetch, HubDownload)
    assert fetch.staging_dir.startswith("/state/models/.staging/")
    assert plan.local_path == "/state/models/hf/org/repo/v1/q4/tiny.gguf"
    assert fetch.target == "org/repo@v1/q4/tiny.gguf"


@pytest.mark.parametrize(
    ("facts_changes", "expected", "first_step"),
    [
        ({}, None, ReuseEntry),
        ({}, DIGEST, ReuseEntry),
        ({"existing_file_size": 99}, None, Download),  # the file on disk is not the one
        ({"existing_file_size": None}, None, Download),  # the file is gone
        ({}, "cd" * 32, Download),  # other content asked for
        ({"existing": _entry(URL, lifecycle="Retired")}, None, VerifyDigest),  # revive
    ],
)
def test_an_existing_entry_is_reused_only_when_its_file_is_intact(
    facts_changes: dict[str, object], expected: str | None, first_step: type
) -> None:
    ref = parse_model_ref(URL)
    facts = replace(ModelFacts(existing=_entry(URL), existing_file_size=100), **facts_changes)  # type: ignore[arg-type]
    plan = plan_model(ref, facts, SETTINGS, expected_sha256=expected)
    assert type(plan.steps[0]) is first_step
    assert plan.model_id == "tiny-q4_k_m"


def test_an_id_taken_by_another_ref_gets_a_suffix_unless_it_was_asked_for() -> None:
    ref = HttpRef("https://example.org/tiny.gguf")
    facts = ModelFacts(id_owner_ref="file:/srv/models/tiny.gguf")
    chosen = plan_model(ref, facts, SETTINGS).model_id
    assert chosen.startswith("tiny-") and len(chosen) == len("tiny-") + 8
    with pytest.raises(RegistrationFailed, match=r"taken by file:/srv/models/tiny\.gguf"):
        plan_model(ref, facts, SETTINGS, model_id="tiny")


@pytest.mark.parametrize(
    ("resolved", "is_file", "error", "reason"),
    [
        ("/etc/passwd", True, RefRefused, "outside the allowed roots"),
        ("/srv/models-evil/tiny.gguf", True, RefRefused, "outside the allowed roots"),
        ("/srv/models/pipe", False, RefRefused, "neither a regular file nor a folder"),
        (None, False, SourceNotFound, "no such file"),
    ],
)
def test_file_refs_are_judged_by_where_they_really_lead(
    resolved: str | None, is_file: bool, error: type[Exception], reason: str
) -> None:
    facts = ModelFacts(local_file=LocalFile(resolved, is_file))
    with pytest.raises(error, match=reason):
        plan_model(FileRef("/srv/models/tiny.gguf"), facts, SETTINGS)


def test_a_model_folder_inside_a_root_is_verified_and_inspected_in_place() -> None:
    facts = ModelFacts(local_file=LocalFile("/srv/models/tiny-hf", False, is_folder=True))
    plan = plan_model(FileRef("/srv/models/tiny-hf"), facts, SETTINGS)
    assert [step.action for step in plan.steps] == ["verify", "inspect", "register"]
    assert (plan.model_id, plan.local_path) == ("tiny-hf", "/srv/models/tiny-hf")
    assert all(not getattr(step, "discard", ()) for step in plan.steps)  # never delete it


def test_a_file_ref_inside_a_root_is_verified_in_place_at_its_real_path() -> None:
    facts = ModelFacts(local_file=LocalFile("/srv/models/real/tiny.gguf", True))
    plan = plan_model(FileRef("/srv/models/link.gguf"), facts, SETTINGS)
    assert [step.action for step in plan.steps] == ["verify", "inspect", "register"]
    assert plan.local_path == "/srv/models/real/tiny.gguf"
    assert all(not getattr(step, "discard", ()) for step in plan.steps)  # never delete it


_SEGMENT = st.from_regex(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,8}", fullmatch=True)


@given(st.lists(_SEGMENT, min_size=1, max_size=4), st.sampled_from(["", "-x", "x", ".d"]))
def test_only_paths_below_a_root_are_accepted(segments: list[str], sibling_suffix: str) -> None:
    inside = "/srv/models/" + "/".join(segments)
    facts = ModelFacts(local_file=LocalFile(inside, True))
    assert plan_model(FileRef(inside), facts, SETTINGS).local_path == inside
    if sibling_suffix:
        outside = f"/srv/models{sibling_suffix}/" + "/".join(segments)
        with pytest.raises(RefRefused):
            plan_model(FileRef(outside), ModelFacts(local_file=LocalFile(outside, True)), SETTINGS)


@pytest.mark.parametrize(
    ("ref", "model_id"),
    [
        ("hf:org/repo/sub/Gemma-3 270M.Q4_K_M.gguf", "gemma-3-270m.q4_k_m"),
        ("https://example.org/x/.gguf", "model"),
        ("file:/srv/models/MODEL.GGUF", "model"),
    ],
)
def test_candidate_ids_are_readable_and_safe(ref: str, model_id: str) -> None:
    assert candidate_model_id(parse_model_ref(ref)) == model_id


def test_a_malformed_expected_digest_is_refused() -> None:
    with pytest.raises(ValueError, match="64 hex"):
        plan_model(parse_model_ref(URL), ModelFacts(), SETTINGS, expected_sha256="abc")


FORBIDDEN = {
    "asyncio", "socket", "subprocess", "os", "sys", "time", "datetime", "random", "secrets",
    "threading", "sqlite3", "pathlib", "shutil", "tempfile", "io", "ssl", "urllib", "http",
    "logging", "httpx", "huggingface_hub", "gguf", "requests", "fcntl", "glob", "tarfile",
    "zipfile", "platform",
}  # fmt: skip
PURE_IMPORTS = {"catalog_core.entries", "catalog_core.refs", "provisioners.errors"}


def _imports(source: str) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_the_planner_imports_nothing_that_does_io() -> None:
    package = Path(provisioners.plan.__file__ or "").parent
    modules = sorted(package.glob("*.py"))
    assert {path.stem for path in modules} >= {"__init__", "models", "engines", "engine_specs"}
    for path in modules:
        imported = _imports(path.read_text())
        assert not {name.split(".")[0] for name in imported} & FORBIDDEN, path.name
        ours = {n for n in imported if n.split(".")[0] in ("catalog_core", "provisioners")}
        assert {n for n in ours if not n.startswith("provisioners.plan.")} <= PURE_IMPORTS, path
    for module in (catalog_core.entries, catalog_core.refs, provisioners.errors):
        source = Path(module.__file__ or "").read_text()
        # refs parses URLs with urllib.parse (string work); nothing else from urllib.
        leaked = {n for n in _imports(source) if n.split(".")[0] in FORBIDDEN} - {"urllib.parse"}
        assert not leaked, (module.__name__, leaked)


def test_the_purity_check_notices_an_io_import() -> None:
    assert _imports("import os\nfrom httpx import get\nfrom . import x\n") == {"os", "httpx"}
