"""Model refs: where a model file comes from, parsed into frozen values (PRV-01).

Three forms are accepted, and `str(ref)` gives back the canonical text, which parses to
an equal value:

    file:/abs/path/model.gguf          a local file (absolute; `file:///abs` also accepted)
    hf:org/repo[@revision]/path/file   a file in a Hugging Face repository
    https://host/path/file.gguf        a URL; `http://` only to loopback (tests, mirrors)

Parsing is pure string work: whether a `file:` path stays inside the allowed roots is
decided where the path is resolved (SEC-03), not here. URLs carrying credentials are
refused so that secrets never land in the catalog or in logs (SEC-04).
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

from catalog_core.errors import InvalidModelRef

__all__ = ["FileRef", "HfRef", "HttpRef", "ModelRef", "parse_model_ref"]

# Hugging Face repo names and revisions: letters, digits, `.`, `_`, `-`; revisions with
# a `/` (e.g. `refs/pr/1`) are not accepted because they would make the path ambiguous.
_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_HF = re.compile(rf"hf:(?P<org>{_NAME})/(?P<name>{_NAME})(?:@(?P<rev>{_NAME}))?/(?P<file>.+)")
_BAD_SEGMENT_CHARS = re.compile(r"[\\\x00-\x1f\x7f]")
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


@dataclass(frozen=True, slots=True)
class FileRef:
    """A local file, by absolute POSIX path as written (not yet resolved)."""

    path: str

    def __post_init__(self) -> None:
        if not self.path.startswith("/") or self.path.startswith("//"):
            raise InvalidModelRef(f"file:{self.path}", "the path must be absolute")
        if "\x00" in self.path:
            raise InvalidModelRef(f"file:{self.path}", "the path contains a NUL byte")

    def __str__(self) -> str:
        return f"file:{self.path}"

    @property
    def filename(self) -> str:
        return posixpath.basename(self.path)


@dataclass(frozen=True, slots=True)
class HfRef:
    """A file in a Hugging Face repository `org/name`, at `revision` (None: the default)."""

    repo: str
    filename: str
    revision: str | None = None

    def __post_init__(self) -> None:
        text = self._text()
        match = _HF.fullmatch(text)
        if match is None or not _valid_repo_path(self.filename):
            raise InvalidModelRef(text, "expected hf:org/repo[@revision]/path/to/file")
        if f"{match['org']}/{match['name']}" != self.repo or match["rev"] != self.revision:
            raise InvalidModelRef(text, "the repo or revision is not well formed")

    def __str__(self) -> str:
        return self._text()

    def _text(self) -> str:
        revision = f"@{self.revision}" if self.revision is not None else ""
        return f"hf:{self.repo}{revision}/{self.filename}"


@dataclass(frozen=True, slots=True)
class HttpRef:
    """A URL: `https://` anywhere, `http://` only to a loopback host."""

    url: str

    def __post_init__(self) -> None:
        _check_url(self.url)

    def __str__(self) -> str:
        return self.url

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def filename(self) -> str:
        """The last path segment, percent-decoded."""
        return unquote(urlsplit(self.url).path.rsplit("/", 1)[-1])


ModelRef = FileRef | HfRef | HttpRef


def parse_model_ref(text: str) -> ModelRef:
    """Parse a model ref; InvalidModelRef says which form was expected and what is wrong."""
    if text.startswith("file:"):
        return FileRef(_file_path(text))
    if text.startswith("hf:"):
        return _parse_hf(text)
    scheme = text.split(":", 1)[0].lower() if ":" in text else ""
    if scheme in ("http", "https"):
        return HttpRef(_canonical_url(text))
    raise InvalidModelRef(text, "expected file:/abs/path, hf:org/repo[@rev]/file or https://")


def _file_path(text: str) -> str:
    path = text.removeprefix("file:")
    if path.startswith("//"):
        if not path.startswith("///"):
            raise InvalidModelRef(text, "file refs name no host: use file:/abs/path")
        path = path[2:]
    return path


def _parse_hf(text: str) -> HfRef:
    match = _HF.fullmatch(text)
    if match is None:
        raise InvalidModelRef(text, "expected hf:org/repo[@revision]/path/to/file")
    return HfRef(f"{match['org']}/{match['name']}", match["file"], match["rev"])


def _valid_repo_path(path: str) -> bool:
    segments = path.split("/")
    return all(
        segment not in ("", ".", "..") and not _BAD_SEGMENT_CHARS.search(segment)
        for segment in segments
    )


def _canonical_url(text: str) -> str:
    try:
        parts = urlsplit(text)
    except ValueError as exc:
        raise InvalidModelRef(text, f"not a URL: {exc}") from exc
    return urlunsplit((parts.scheme.lower(), parts.netloc, parts.path, parts.query, parts.fragment))


def _check_url(url: str) -> None:
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as exc:
        raise InvalidModelRef(url, f"not a URL: {exc}") from exc
    if parts.scheme not in ("http", "https") or not hostname:
        raise InvalidModelRef(url, "expected https://host/path/file")
    if parts.scheme == "http" and hostname not in _LOOPBACK_HOSTS:
        raise InvalidModelRef(url, "plain http is allowed only to a loopback host; use https")
    if parts.username is not None or parts.password is not None:
        redacted = urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[-1]))
        raise InvalidModelRef(redacted, "credentials in a URL are not allowed; use a token")
    if parts.fragment:
        raise InvalidModelRef(url, "a URL fragment is not allowed")
    name = unquote(parts.path.rsplit("/", 1)[-1])
    if name in ("", ".", "..") or "/" in name or _BAD_SEGMENT_CHARS.search(name):
        raise InvalidModelRef(url, "the URL path must end with a file name")
    if _canonical_url(url) != url:
        raise InvalidModelRef(url, "the URL is not in canonical form (lower-case scheme)")
