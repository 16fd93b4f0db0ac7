"""Model references on the command line (CLI-02), the same for every command that takes
a model (`up --model`, `run`, `provision model`):

    hf:ORG/REPO[:QUANT]          a GGUF file of a Hugging Face repository: the one whose
                                 name has QUANT (default Q4_K_M, else the only one)
    hf:ORG/REPO[@REV]/PATH.gguf  one file of a repository (catalog-core's ref)
    https://HOST/PATH.gguf       a URL (`http://` only to loopback)
    file:/ABS/PATH, PATH         a local file (relative paths from the current folder)
    ID                           anything else: a catalog id or alias

`classify` is pure string work. `resolve_hf_shorthand` lists the repository on the hub
(`$HF_ENDPOINT`, else https://huggingface.co) and picks the file (`pick_gguf`, pure);
it fails with a `ModelRefError` whose `code` says why: `INVALID_MODEL_REF` (usage, exit
2), `SOURCE_UNREACHABLE` (the hub cannot be reached: offline, retryable),
`MODEL_NOT_FOUND` (no such repository, or no GGUF file matching QUANT).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx

__all__ = [
    "ModelRefError",
    "Reference",
    "classify",
    "hub_endpoint",
    "pick_gguf",
    "resolve_hf_shorthand",
]

Kind = Literal["hf-shorthand", "remote", "path", "id"]
_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_SHORTHAND = re.compile(rf"hf:(?P<org>{_NAME})/(?P<repo>{_NAME})(?::(?P<quant>[A-Za-z0-9_.-]+))?")
_DEFAULT_QUANT = "Q4_K_M"
_HUB_TIMEOUT_S = 10.0


class ModelRefError(Exception):
    """A model reference that cannot be used, with a code: INVALID_MODEL_REF,
    SOURCE_UNREACHABLE or MODEL_NOT_FOUND."""

    def __init__(self, code: str, reference: str, reason: str) -> None:
        super().__init__(f"{code}: {reference}: {reason}")
        self.code = code
        self.reference = reference
        self.reason = reason

    @property
    def retryable(self) -> bool:
        return self.code == "SOURCE_UNREACHABLE"


@dataclass(frozen=True, slots=True)
class Reference:
    kind: Kind
    text: str  # as a provisioner takes it: `hf:…`, `https://…`, an absolute path, an id
    org: str = ""
    repo: str = ""
    quant: str = ""


def _looks_like_path(text: str) -> bool:
    return "/" in text or text.endswith(".gguf") or text.startswith((".", "~"))


def classify(text: str) -> Reference:
    """What kind of reference `text` is (pure; nothing is looked up)."""
    text = text.strip()
    if not text:
        raise ModelRefError("INVALID_MODEL_REF", text, "the model reference is empty")
    if text.startswith("hf:"):
        match = _SHORTHAND.fullmatch(text)
        if match is not None:
            quant = match["quant"] or ""
            return Reference("hf-shorthand", text, match["org"], match["repo"], quant)
        if text.count("/") >= 2:
            return Reference("remote", text)
        raise ModelRefError(
            "INVALID_MODEL_REF", text, "expected hf:ORG/REPO[:QUANT] or hf:ORG/REPO/FILE.gguf"
        )
    if text.startswith(("https://", "http://")):
        return Reference("remote", text)
    if text.startswith("file:"):
        text = text.removeprefix("file:").removeprefix("//")
        return Reference("path", str(Path(text).expanduser().absolute()))
    if _looks_like_path(text):
        return Reference("path", str(Path(text).expanduser().absolute()))
    return Reference("id", text)


def pick_gguf(files: list[str], quant: str, reference: str) -> str:
    """The repository file to fetch: a `.gguf` whose name has `quant` (any case; default
    Q4_K_M, else the only GGUF file). Split files (`-00001-of-`) are not supported."""
    ggufs = [f for f in files if f.lower().endswith(".gguf") and "-of-0" not in f]
    wanted = (quant or _DEFAULT_QUANT).lower()
    matching = [f for f in ggufs if wanted in f.lower()]
    if not matching and not quant and len(ggufs) == 1:
        matching = ggufs
    if len(matching) == 1:
        return matching[0]
    if not matching:
        have = ", ".join(sorted(ggufs)[:8]) or "none"
        raise ModelRefError(
            "MODEL_NOT_FOUND", reference, f"no GGUF file for {wanted.upper()} (GGUF files: {have})"
        )
    return sorted(matching, key=lambda f: (len(f), f))[0]


def hub_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def resolve_hf_shorthand(ref: Reference, timeout_s: float = _HUB_TIMEOUT_S) -> str:
    """`hf:ORG/REPO[:QUANT]` as the ref of one file, `hf:ORG/REPO/FILE.gguf`, by listing
    the repository on the hub."""
    url = f"{hub_endpoint()}/api/models/{ref.org}/{ref.repo}"
    try:
        response = httpx.get(url, timeout=timeout_s, follow_redirects=True)
    except httpx.HTTPError as exc:
        reason = (
            f"cannot reach {hub_endpoint()} to list the repository ({exc or type(exc).__name__})"
        )
        raise ModelRefError("SOURCE_UNREACHABLE", ref.text, reason) from None
    if response.status_code in (401, 404):
        raise ModelRefError(
            "MODEL_NOT_FOUND", ref.text, f"no repository {ref.org}/{ref.repo} (or it is private)"
        )
    if response.status_code >= 400:
        raise ModelRefError(
            "SOURCE_UNREACHABLE", ref.text, f"the hub answered HTTP {response.status_code}"
        )
    try:
        siblings = response.json().get("siblings") or []
        files = [str(s["rfilename"]) for s in siblings]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ModelRefError(
            "SOURCE_UNREACHABLE", ref.text, "the hub's listing is not what was expected"
        ) from None
    return f"hf:{ref.org}/{ref.repo}/{pick_gguf(files, ref.quant, ref.text)}"
