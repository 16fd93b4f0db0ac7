"""Concurrent readers see whole transactions while one writer works (CAT-01).

The writer stores models in pairs, one transaction per pair; every reader, in another
thread or another process, must only ever see an even number of models.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

from catalog_core import CatalogStore, ModelEntry

PAIRS = 40
TOTAL = 2 * PAIRS

_READER = """
import sys
from pathlib import Path
from catalog_core import CatalogStore

target = int(sys.argv[2])
with CatalogStore(Path(sys.argv[1])) as store:
    print("ready", flush=True)
    reads = 0
    while True:
        count = len(store.list_models(limit=1000).items)
        reads += 1
        if count % 2:
            print(f"torn read: {count}", flush=True)
            sys.exit(1)
        if count == target:
            break
print(f"done {reads}", flush=True)
"""


def _entry(index: int) -> ModelEntry:
    return ModelEntry(
        id=f"m{index:04d}", ref=f"file:/m/{index}.gguf", local_path="/m", sha256="0" * 64, size=1
    )


def _write_pairs(path: Path) -> None:
    with CatalogStore(path) as writer:
        for pair in range(PAIRS):
            writer.put_models([_entry(2 * pair), _entry(2 * pair + 1)])


def test_reader_threads_never_see_half_a_transaction(tmp_path: Path) -> None:
    path = tmp_path / "catalog.sqlite"
    CatalogStore(path).close()
    start = threading.Barrier(5)
    torn: list[int] = []

    def read() -> None:
        with CatalogStore(path) as store:
            start.wait(timeout=30)
            while (count := len(store.list_models(limit=1000).items)) != TOTAL:
                if count % 2:
                    torn.append(count)

    readers = [threading.Thread(target=read) for _ in range(4)]
    for reader in readers:
        reader.start()
    start.wait(timeout=30)
    _write_pairs(path)
    for reader in readers:
        reader.join(timeout=60)
        assert not reader.is_alive()
    assert torn == []


def test_reader_processes_never_see_half_a_transaction(tmp_path: Path) -> None:
    path = tmp_path / "catalog.sqlite"
    CatalogStore(path).close()
    readers = [
        subprocess.Popen(
            [sys.executable, "-c", _READER, str(path), str(TOTAL)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for reader in readers:
            assert reader.stdout is not None
            assert reader.stdout.readline().strip() == "ready"
        _write_pairs(path)
        outputs = [reader.communicate(timeout=120)[0] for reader in readers]
    finally:
        for reader in readers:
            if reader.poll() is None:
                reader.kill()
                reader.wait()
    assert [reader.returncode for reader in readers] == [0, 0], outputs
    assert all(output.startswith("done") for output in outputs)
