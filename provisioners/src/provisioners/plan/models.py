"""Model provisioning plans (PRV-01, PRV-03): what to do for a ref, decided without I/O.

Imported as `provisioners.plan` (the package re-exports everything here).

`plan_model(ref, facts, settings)` takes a parsed ref, the facts the executor gathered
(the catalog's entry for the ref, the size of its file on disk, where a `file:` path
really leads) and the settings (models folder, allowed roots), and returns a `ModelPlan`:
the model id, the final local path and the ordered steps. The executor runs the steps
and narrates each one by its `action` and `target`. Pure: no file system, network,
clock or randomness; the only refusals decided here are the SEC-03 ones (a `file:` path
that resolves outside every allowed root) and ids taken by other refs.

Step order for a download: fetch into a scratch path, verify the digest, read the GGUF
metadata, publish (atomic rename) to the final path, register in the catalog. Anything
fetched is discarded when it fails verification, so a bad file never reaches the final
path or the catalog.

A `file:` ref may name a Hugging Face model folder (for vLLM) instead of a GGUF file: the
same steps, where the digest is the folder digest (`catalog_core.model_digest`) and the
metadata are the folder's (`catalog_core.inspect_model`); the entry's format says which.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from dataclasses import dataclass
from typing import ClassVar

from catalog_core.entries import ModelEntry
from catalog_core.refs import FileRef, HfRef, HttpRef, ModelRef

from provisioners.errors import RefRefused, RegistrationFailed, SourceNotFound

__all__ = [
    "Download",
    "HubDownload",
    "LocalFile",
    "ModelFacts",
    "ModelPlan",
    "PlanSettings",
    "Publish",
    "ReadMetadata",
    "Register",
    "ReuseEntry",
    "Step",
    "VerifyDigest",
    "candidate_model_id",
    "plan_model",
    "validator_path",
    "wanted_model_id",
]

_SHA256 = re.compile(r"[0-9a-f]{64}")
_UNSAFE_NAME_CHARS = re.compile(r"[^a-z0-9._-]+")
_MAX_ID_CHARS = 64


@dataclass(frozen=True, slots=True)
class ReuseEntry:
    """The catalog already holds this ref, Active, with its file in place."""

    action: ClassVar[str] = "reuse"
    model_id: str

    @property
    def target(self) -> str:
        return self.model_id


@dataclass(frozen=True, slots=True)
class Download:
    """Fetch `url` into `part_path`, resuming from its current size (HTTP Range)."""

    action: ClassVar[str] = "download"
    url: str
    part_path: str

    @property
    def target(self) -> str:
        return self.url.split("?", 1)[0]  # a query may carry a signature: keep it out of logs


@dataclass(frozen=True, slots=True)
class HubDownload:
    """Fetch `filename` of hub repo `repo` at `revision` into `staging_dir`."""

    action: ClassVar[str] = "hub-download"
    repo: str
    filename: str
    revision: str | None
    staging_dir: str

    @property
    def target(self) -> str:
        return f"{self.repo}@{self.revision or 'main'}/{self.filename}"


@dataclass(frozen=True, slots=True)
class VerifyDigest:
    """Hash `path`; compare with `expected_sha256` when given; on a mismatch delete `discard`."""

    action: ClassVar[str] = "verify"
    path: str
    expected_sha256: str | None
    discard: tuple[str, ...]

    @property
    def target(self) -> str:
        return self.path


@dataclass(frozen=True, slots=True)
class ReadMetadata:
    """Read the GGUF header of `path`; if it is not a model, delete `discard`."""

    action: ClassVar[str] = "inspect"
    path: str
    discard: tuple[str, ...]

    @property
    def target(self) -> str:
        return self.path


@dataclass(frozen=True, slots=True)
class Publish:
    """Rename `source` to `destination` atomically, then delete `remove_after`."""

    action: ClassVar[str] = "publish"
    source: str
    destination: str
    remove_after: tuple[str, ...]

    @property
    def target(self) -> str:
        return self.destination


@dataclass(frozen=True, slots=True)
class Register:
    """Write the entry for `ref`, Active, pointing at `local_path`."""

    action: ClassVar[str] = "register"
    model_id: str
    ref: str
    local_path: str

    @property
    def target(self) -> str:
        return self.model_id


Step = ReuseEntry | Download | HubDownload | VerifyDigest | ReadMetadata | Publish | Register


@dataclass(frozen=True, slots=True)
class LocalFile:
    """What the file system says about a `file:` ref's path."""

    resolved_path: str | None  # symlinks and `..` resolved; None when nothing is there
    is_regular_file: bool
    is_folder: bool = False  # a Hugging Face model folder, for vLLM (checked when inspected)


@dataclass(frozen=True, slots=True)
class ModelFacts:
    """What the executor found before planning."""

    existing: ModelEntry | None = None  # the catalog's entry for this ref
    existing_file_size: int | None = None  # bytes of existing.local_path (a folder: all its
    # files); None if missing
    id_owner_ref: str | None = None  # the ref whose entry holds the wanted id, if any
    local_file: LocalFile | None = None  # for `file:` refs only


@dataclass(frozen=True, slots=True)
class PlanSettings:
    """Where models go and where `file:` refs may point; all absolute, roots resolved."""

    models_dir: str
    allowed_roots: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ModelPlan:
    ref: str
    model_id: str
    local_path: str
    steps: tuple[Step, ...]


def validator_path(part_path: str) -> str:
    """Where a download keeps the ETag or Last-Modified of its partial file."""
    return part_path + ".meta"


def candidate_model_id(ref: ModelRef) -> str:
    """A readable id from the ref's file name: lower case, `.gguf` dropped, safe chars."""
    stem = ref.filename.lower().removesuffix(".gguf").rsplit("/", 1)[-1]
    return _UNSAFE_NAME_CHARS.sub("-", stem).strip("-._")[:_MAX_ID_CHARS] or "model"


def wanted_model_id(ref: ModelRef, requested: str | None, existing: ModelEntry | None) -> str:
    """The id asked for, else the one the ref already has, else a candidate from its name."""
    if requested:
        return requested
    return existing.id if existing is not None else candidate_model_id(ref)


def plan_model(
    ref: ModelRef,
    facts: ModelFacts,
    settings: PlanSettings,
    *,
    expected_sha256: str | None = None,
    model_id: str | None = None,
) -> ModelPlan:
    """The steps that make `ref` an Active, verified catalog entry (see module doc)."""
    expected = _normalised_digest(expected_sha256)
    chosen = _chosen_id(ref, facts, model_id)
    if isinstance(ref, FileRef):
        return _plan_file(ref, facts, settings, expected, chosen)
    existing = facts.existing
    if existing is not None and _file_intact(existing, facts, expected):
        if existing.lifecycle == "Active" and existing.id == chosen:
            return ModelPlan(str(ref), chosen, existing.local_path, (ReuseEntry(chosen),))
        return _plan_revive(ref, existing, chosen)
    if isinstance(ref, HttpRef):
        return _plan_http(ref, settings, expected, chosen)
    return _plan_hub(ref, settings, expected, chosen)


def _plan_file(
    ref: FileRef, facts: ModelFacts, settings: PlanSettings, expected: str | None, chosen: str
) -> ModelPlan:
    path = _allowed_local_path(ref, facts.local_file, settings.allowed_roots)
    existing = facts.existing
    if (
        existing is not None
        and existing.local_path == path
        and existing.lifecycle == "Active"
        and existing.id == chosen
        and _file_intact(existing, facts, expected)
    ):
        return ModelPlan(str(ref), chosen, path, (ReuseEntry(chosen),))
    steps = (
        VerifyDigest(path, expected, discard=()),
        ReadMetadata(path, discard=()),
        Register(chosen, str(ref), path),
    )
    return ModelPlan(str(ref), chosen, path, steps)


def _plan_revive(ref: ModelRef, existing: ModelEntry, chosen: str) -> ModelPlan:
    """A Retired (or renamed) entry whose file is still there: check it and register."""
    path = existing.local_path
    steps = (
        VerifyDigest(path, existing.sha256, discard=()),
        ReadMetadata(path, discard=()),
        Register(chosen, str(ref), path),
    )
    return ModelPlan(str(ref), chosen, path, steps)


def _plan_http(
    ref: HttpRef, settings: PlanSettings, expected: str | None, chosen: str
) -> ModelPlan:
    folder = posixpath.join(settings.models_dir, "https", _short_hash(ref.url))
    final = posixpath.join(folder, _safe_file_name(ref.filename))
    part = final + ".part"
    scratch = (part, validator_path(part))
    steps = (
        Download(ref.url, part),
        VerifyDigest(part, expected, discard=scratch),
        ReadMetadata(part, discard=scratch),
        Publish(part, final, remove_after=(validator_path(part),)),
        Register(chosen, str(ref), final),
    )
    return ModelPlan(str(ref), chosen, final, steps)


def _plan_hub(ref: HfRef, settings: PlanSettings, expected: str | None, chosen: str) -> ModelPlan:
    staging = posixpath.join(settings.models_dir, ".staging", _short_hash(str(ref)))
    fetched = posixpath.join(staging, ref.filename)
    final = posixpath.join(
        settings.models_dir, "hf", ref.repo, ref.revision or "main", ref.filename
    )
    steps = (
        HubDownload(ref.repo, ref.filename, ref.revision, staging),
        VerifyDigest(fetched, expected, discard=(staging,)),
        ReadMetadata(fetched, discard=(staging,)),
        Publish(fetched, final, remove_after=(staging,)),
        Register(chosen, str(ref), final),
    )
    return ModelPlan(str(ref), chosen, final, steps)


def _allowed_local_path(ref: FileRef, local: LocalFile | None, roots: tuple[str, ...]) -> str:
    """The resolved path of a `file:` ref, if it stays inside an allowed root (SEC-03)."""
    if not roots:
        raise RefRefused(f"{ref} refused: no allowed roots are configured for file: refs")
    if local is None or local.resolved_path is None:
        raise SourceNotFound(f"{ref}: no such file")
    resolved = local.resolved_path
    if not any(_inside(resolved, root) for root in roots):
        raise RefRefused(
            f"{ref} refused: it resolves to {resolved}, outside the allowed roots "
            f"({', '.join(roots)})"
        )
    if not local.is_regular_file and not local.is_folder:
        raise RefRefused(f"{ref} refused: {resolved} is neither a regular file nor a folder")
    return resolved


def _inside(path: str, root: str) -> bool:
    path, root = posixpath.normpath(path), posixpath.normpath(root)
    return path == root or path.startswith(root.rstrip("/") + "/")


def _file_intact(existing: ModelEntry, facts: ModelFacts, expected: str | None) -> bool:
    """The entry's file is where it was, with its size, and it is the content asked for."""
    same_size = facts.existing_file_size == existing.size
    return same_size and expected in (None, existing.sha256)


def _chosen_id(ref: ModelRef, facts: ModelFacts, requested: str | None) -> str:
    wanted = wanted_model_id(ref, requested, facts.existing)
    owner = facts.id_owner_ref
    if owner is None or owner == str(ref):
        return wanted
    if requested:
        raise RegistrationFailed(f"model id {requested!r} is taken by {owner}")
    return f"{wanted[: _MAX_ID_CHARS - 9]}-{_short_hash(str(ref))[:8]}"


def _normalised_digest(expected: str | None) -> str | None:
    if expected is None:
        return None
    lowered = expected.strip().lower()
    if not _SHA256.fullmatch(lowered):
        raise ValueError(f"expected sha256 must be 64 hex digits, got {expected!r}")
    return lowered


def _safe_file_name(name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).lstrip(".")
    return safe or "model.gguf"


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]
