"""Reload decisions (POOL-05): which strategy, which model file; and engine log trimming
while the engine writes (POOL-06)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from catalog_core import TinyModelSpec, write_tiny_model
from pool_managerd.config import ModelConfig, PoolConfig
from pool_managerd.models import LocalModels
from pool_managerd.process import log_tail, trim_log
from pool_managerd.reload import (
    ESTIMATE_MARGIN_PERCENT,
    ReloadRefused,
    choose_strategy,
    target_config,
)


@pytest.mark.parametrize(
    ("needed", "free", "expected"),
    [
        (100, 1000, "side-by-side"),
        (100, ESTIMATE_MARGIN_PERCENT, "side-by-side"),
        (100, ESTIMATE_MARGIN_PERCENT - 1, "drain-then-swap"),
        (100, 50, "drain-then-swap"),
        (100, None, "drain-then-swap"),  # an unknown device: never risk two loads
        (0, 1000, "drain-then-swap"),  # no estimate: never risk two loads
    ],
)
def test_the_new_model_starts_beside_the_old_only_when_its_estimate_fits_with_margin(
    needed: int, free: int | None, expected: str
) -> None:
    assert choose_strategy(needed, free) == expected


@pytest.fixture(scope="module")
def held(tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalModels, Path]:
    root = tmp_path_factory.mktemp("models")
    path = write_tiny_model(root / "other.gguf", TinyModelSpec(seed=7, name="other"))
    models = LocalModels.load((ModelConfig("other", str(path), aliases=("second",)),), root)
    return models, root


def test_a_reload_target_is_a_held_model_by_id_alias_or_an_absolute_path_under_a_root(
    held: tuple[LocalModels, Path],
) -> None:
    models, root = held
    pool = PoolConfig(id="p", model=str(root / "first.gguf"), model_id="first", sha256="ab")
    by_alias = target_config(pool, "second", models, (root,))
    assert (by_alias.model_id, by_alias.model) == ("other", str(root / "other.gguf"))
    assert by_alias.sha256 == models.resolve("other").sha256  # checked again at load
    by_path = target_config(pool, f"file:{root}/new.gguf", models, (root,))
    assert (by_path.model_id, by_path.sha256) == ("new", "")
    assert by_path.id == "p" and by_path.ctx == pool.ctx  # only the model changes


@pytest.mark.parametrize(
    ("ref", "code"),
    [
        ("no-such-model", "MODEL_NOT_FOUND"),
        ("relative/path.gguf", "MODEL_NOT_FOUND"),
        ("/etc/passwd", "FORBIDDEN"),
        ("ROOT/../escape.gguf", "FORBIDDEN"),
    ],
)
def test_a_reload_target_outside_the_roots_or_unknown_is_refused_with_a_code(
    held: tuple[LocalModels, Path], ref: str, code: str
) -> None:
    models, root = held
    pool = PoolConfig(id="p", model=str(root / "first.gguf"))
    with pytest.raises(ReloadRefused) as refused:
        target_config(pool, ref.replace("ROOT", str(root)), models, (root,))
    assert refused.value.code == code


def test_a_deployments_pool_is_not_reloaded_behind_its_deployment(
    held: tuple[LocalModels, Path],
) -> None:
    models, root = held
    pool = PoolConfig(id="p", model=str(root / "first.gguf"), deployment="chat")
    with pytest.raises(ReloadRefused, match="deployment chat") as refused:
        target_config(pool, "other", models, (root,))
    assert refused.value.code == "INVALID_PARAMS"


def test_a_running_engines_log_is_trimmed_and_its_next_lines_land_in_the_fresh_file(
    tmp_path: Path,
) -> None:
    log = tmp_path / "engine.log"
    writer = (
        "import sys\n"
        "for i in range(2000): print(f'line {i:05d} ' + 'x' * 40)\n"
        "sys.stdout.flush(); sys.stdin.readline(); print('after the trim')\n"
    )
    with log.open("ab") as out:
        engine = subprocess.Popen(
            [sys.executable, "-c", writer], stdin=subprocess.PIPE, stdout=out, stderr=out
        )
    try:
        assert engine.stdin is not None
        deadline = time.monotonic() + 30.0
        while log.read_text().count("\n") < 2000:  # the writer has written all its lines
            assert engine.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        assert trim_log(log, limit_bytes=10_000)
        engine.stdin.write(b"go\n")
        engine.stdin.flush()
        assert engine.wait(timeout=30) == 0
    finally:
        engine.kill()
    assert log.read_text() == "after the trim\n"  # appended at the new start: no hole
    rotated = (tmp_path / "engine.log.1").read_text()
    assert rotated.startswith("line 00000") and "line 01999" in rotated
    assert log_tail(log) == "after the trim"
    assert not trim_log(log, limit_bytes=10_000)  # small again: left alone


def test_a_model_added_to_the_local_catalog_while_running_is_offered_and_others_kept(
    tmp_path: Path,
) -> None:
    from catalog_core import CatalogStore, ModelEntry, sha256_file

    first = write_tiny_model(tmp_path / "first.gguf", TinyModelSpec(seed=3, name="first"))
    models = LocalModels.load((ModelConfig("first", str(first)),), tmp_path)
    assert models.with_new_catalog_entries(tmp_path) is models  # no catalog: nothing new
    added = write_tiny_model(tmp_path / "added.gguf", TinyModelSpec(seed=5, name="added"))
    retired = write_tiny_model(tmp_path / "old.gguf", TinyModelSpec(seed=6, name="old"))
    with CatalogStore(tmp_path / "catalog.sqlite") as store:
        for path, state in ((added, "Active"), (retired, "Retired")):
            store.put_model(
                ModelEntry(path.stem, f"file:{path}", str(path), sha256_file(path),
                           path.stat().st_size, lifecycle=state)  # type: ignore[arg-type]
            )  # fmt: skip
    refreshed = models.with_new_catalog_entries(tmp_path)
    assert [m.id for m in refreshed.all()] == ["added", "first"]
    assert refreshed.resolve("added").path == added.resolve()
    assert refreshed.with_new_catalog_entries(tmp_path) is refreshed  # nothing new again
