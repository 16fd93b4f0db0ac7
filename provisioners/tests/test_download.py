"""Model provisioning from URLs (PRV-01): resumable download, digest, single flight."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import socket
from pathlib import Path

import pytest
from catalog_core import CatalogStore, TinyModelSpec, write_tiny_model
from provisioners.testing import RangeFileServer

from provisioners import (
    DownloadPolicy,
    ModelDigestMismatch,
    ModelProvisioner,
    ModelProvisionerSettings,
    SourceNotFound,
    SourceUnreachable,
)

from .conftest import CLOCK_MS, files_under, read_file


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def test_a_url_is_downloaded_verified_and_registered_with_its_metadata(
    provisioner: ModelProvisioner, server: RangeFileServer, store: CatalogStore, model_bytes: bytes
) -> None:
    seen: list[tuple[int, int | None]] = []
    url = server.url("models/tiny.gguf")
    entry = await provisioner.provision(
        url, sha256=_sha256(model_bytes).upper(), progress=lambda d, t: seen.append((d, t))
    )
    assert (entry.id, entry.ref, entry.lifecycle) == ("tiny", url, "Active")
    assert (entry.sha256, entry.size) == (_sha256(model_bytes), len(model_bytes))
    assert (entry.architecture, entry.quantization, entry.trained_context) == ("llama", "F32", 4096)
    assert (entry.layers, entry.heads, entry.kv_heads, entry.head_size) == (2, 4, 2, 16)
    assert entry.chat_template and entry.parameter_count > 0 and entry.verified_at_ms == CLOCK_MS
    assert read_file(entry.local_path) == model_bytes
    assert files_under(Path(entry.local_path).parent) == [Path(entry.local_path)]
    assert store.get_model("tiny") == entry and store.model_by_ref(url) == entry
    assert seen[-1] == (len(model_bytes), len(model_bytes))
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)


async def test_interrupted_download_resumes_from_partial_size(
    provisioner: ModelProvisioner, server: RangeFileServer, model_bytes: bytes
) -> None:
    half = len(model_bytes) // 2
    server.drop_next(after_bytes=half)
    entry = await provisioner.provision(server.url("models/tiny.gguf"))
    assert [request.range for request in server.requests] == [None, f"bytes={half}-"]
    assert [request.status for request in server.requests] == [200, 206]
    assert server.body_bytes_sent == len(model_bytes)  # one file's worth, not two
    assert read_file(entry.local_path) == model_bytes


async def test_a_cancelled_download_keeps_its_part_file_and_the_next_one_resumes_it(
    provisioner: ModelProvisioner, server: RangeFileServer, model_bytes: bytes
) -> None:
    half = len(model_bytes) // 3
    release = server.hold_next(after_bytes=half)
    reached_half = asyncio.Event()

    def progress(done: int, total: int | None) -> None:
        if done >= half:
            reached_half.set()

    url = server.url("models/tiny.gguf")
    first = asyncio.create_task(provisioner.provision(url, progress=progress))
    async with asyncio.timeout(30):
        await reached_half.wait()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    release.set()
    plan = await provisioner.plan(url)
    part = plan.local_path + ".part"
    assert read_file(part) == model_bytes[:half]
    entry = await provisioner.provision(url)
    assert [request.range for request in server.requests] == [None, f"bytes={half}-"]
    assert server.body_bytes_sent == len(model_bytes)
    assert read_file(entry.local_path) == model_bytes and read_file(part) is None


async def test_a_wrong_digest_is_refused_naming_both_and_leaves_nothing(
    provisioner: ModelProvisioner,
    server: RangeFileServer,
    store: CatalogStore,
    models_dir: Path,
    model_bytes: bytes,
) -> None:
    wrong = "0" * 64
    with pytest.raises(ModelDigestMismatch) as caught:
        await provisioner.provision(server.url("models/tiny.gguf"), sha256=wrong)
    assert wrong in str(caught.value) and _sha256(model_bytes) in str(caught.value)
    assert store.list_models().items == ()
    assert files_under(models_dir) == []


async def test_two_concurrent_provisions_of_one_ref_download_once(
    provisioner: ModelProvisioner, server: RangeFileServer, store: CatalogStore
) -> None:
    url = server.url("models/tiny.gguf")
    progress: dict[str, int] = {"a": 0, "b": 0}

    def listener(name: str) -> object:
        return lambda done, total: progress.__setitem__(name, done)

    first, second = await asyncio.gather(
        provisioner.provision(url, progress=listener("a")),  # type: ignore[arg-type]
        provisioner.provision(url, progress=listener("b")),  # type: ignore[arg-type]
    )
    assert first == second
    assert [request.method for request in server.requests] == ["GET"]
    assert progress["a"] == progress["b"] == first.size
    assert len(store.list_models().items) == 1


async def test_a_provisioned_ref_is_reused_without_a_request(
    provisioner: ModelProvisioner, server: RangeFileServer, model_bytes: bytes
) -> None:
    url = server.url("models/tiny.gguf")
    entry = await provisioner.provision(url)
    again = await provisioner.provision(url, sha256=_sha256(model_bytes))
    assert again == entry and len(server.requests) == 1


async def test_a_changed_file_behind_a_partial_download_is_fetched_again_from_zero(
    store: CatalogStore, settings: ModelProvisionerSettings, tmp_path: Path, model_bytes: bytes
) -> None:
    once = ModelProvisionerSettings(
        models_dir=settings.models_dir, download=DownloadPolicy(attempts=1, backoff_s=0.0)
    )
    changed = write_tiny_model(tmp_path / "other.gguf", TinyModelSpec(seed=7)).read_bytes()
    with RangeFileServer({"tiny.gguf": model_bytes}) as server:
        async with ModelProvisioner(store, once) as provisioner:
            server.drop_next(after_bytes=1000)
            with pytest.raises(SourceUnreachable) as caught:
                await provisioner.provision(server.url("tiny.gguf"))
            assert caught.value.retryable
            server.files["tiny.gguf"] = changed
            entry = await provisioner.provision(server.url("tiny.gguf"))
    assert server.requests[-1].range == "bytes=1000-" and server.requests[-1].status == 200
    assert entry.sha256 == _sha256(changed)


async def test_a_missing_file_is_not_found(
    provisioner: ModelProvisioner, server: RangeFileServer, store: CatalogStore
) -> None:
    with pytest.raises(SourceNotFound, match="404"):
        await provisioner.provision(server.url("models/missing.gguf"))
    assert store.list_models().items == ()


async def test_an_unreachable_host_fails_retryably_after_its_attempts(
    provisioner: ModelProvisioner, store: CatalogStore
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed when the block ends: connections are refused
    with pytest.raises(SourceUnreachable, match="after 3 attempts") as caught:
        await provisioner.provision(f"http://127.0.0.1:{port}/tiny.gguf")
    assert caught.value.retryable and store.list_models().items == ()


async def test_every_step_is_narrated_with_its_action_and_target(
    provisioner: ModelProvisioner, server: RangeFileServer, caplog: pytest.LogCaptureFixture
) -> None:
    url = server.url("models/tiny.gguf") + "?signature=s3cr3t"
    with caplog.at_level(logging.INFO, logger="provisioners"):
        await provisioner.provision(url)
    narrated = [
        (record.action, record.target)  # type: ignore[attr-defined]
        for record in caplog.records
        if hasattr(record, "action")
    ]
    assert [action for action, _ in narrated] == [
        "download",
        "verify",
        "inspect",
        "publish",
        "register",
    ]
    assert narrated[0][1] == server.url("models/tiny.gguf") and narrated[-1][1] == "tiny"
    assert "s3cr3t" not in caplog.text


async def test_a_flight_survives_while_one_of_its_callers_is_still_waiting(
    provisioner: ModelProvisioner, server: RangeFileServer, model_bytes: bytes
) -> None:
    half = len(model_bytes) // 2
    release = server.hold_next(after_bytes=half)
    reached_half = asyncio.Event()
    url = server.url("models/tiny.gguf")

    def progress(done: int, total: int | None) -> None:
        if done >= half:
            reached_half.set()

    impatient = asyncio.create_task(provisioner.provision(url, progress=progress))
    patient = asyncio.create_task(provisioner.provision(url))
    async with asyncio.timeout(30):
        await reached_half.wait()
    impatient.cancel()
    with pytest.raises(asyncio.CancelledError):
        await impatient
    release.set()  # the held answer ends early; the flight resumes where it stopped
    entry = await patient
    assert read_file(entry.local_path) == model_bytes
    assert [request.range for request in server.requests] == [None, f"bytes={half}-"]


async def test_callers_expecting_different_digests_run_one_after_the_other(
    provisioner: ModelProvisioner, server: RangeFileServer, model_bytes: bytes
) -> None:
    url = server.url("models/tiny.gguf")
    wrong, right = "0" * 64, _sha256(model_bytes)
    results = await asyncio.gather(
        provisioner.provision(url, sha256=wrong),
        provisioner.provision(url),
        provisioner.provision(url, sha256=right),
        return_exceptions=True,
    )
    assert isinstance(results[0], ModelDigestMismatch)
    assert results[1] == results[2] and not isinstance(results[1], BaseException)
    assert results[1].sha256 == right
    assert [request.range for request in server.requests] == [None, None]  # refused, then one


async def test_a_retired_model_is_revived_after_checking_its_file_without_a_download(
    provisioner: ModelProvisioner, server: RangeFileServer, store: CatalogStore
) -> None:
    url = server.url("models/tiny.gguf")
    entry = await provisioner.provision(url)
    store.set_lifecycle(entry.id, "Retired")
    revived = await provisioner.provision(url)
    assert revived.lifecycle == "Active" and revived.sha256 == entry.sha256
    assert len(server.requests) == 1
