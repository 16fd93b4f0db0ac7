"""The secrets a test session used, and a scan of every log it wrote for them (SEC-04).

Every key and token the harness makes or is handed is registered here (`register`):
`Cluster` registers its join token, the bearer keys in its headers and the per-pool
engine keys it finds in its workers' environments; `FleetCerts` the lines of its private
keys; tests register the API keys they make with `new_api_key`. At scan time the files
that hold secrets by design under the session's directory are read too (`discover`):
`join-token` files and `api-keys/ROLE` files (`llorch up`), and PEM private keys.

Every daemon log the harness and the tests write goes under the session's base temp
directory (`tmp_path_factory`: cluster roots, `llorch up` state dirs, engine logs);
`scan` reads each log file there (`is_log`) and reports every line holding a registered
secret in any of the forms a leak takes (`forms`): as is (so also `Bearer <key>`, JSON,
a query string), percent-encoded, hex, or base64 at any byte alignment. A `Leak` names
file, line, what the secret is and the form, and shows the secret only redacted. The
root `conftest.py` runs the scan as the session's last test.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
import urllib.parse
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil

__all__ = [
    "ENGINE_KEY_VARIABLES",
    "MIN_LENGTH",
    "Leak",
    "discover",
    "engine_keys",
    "forms",
    "is_log",
    "new_api_key",
    "pem_private_lines",
    "redact",
    "register",
    "registered",
    "scan",
]

MIN_LENGTH = 12  # shorter "secrets" ("t", "test") would match everywhere
_REGISTRY: dict[str, str] = {}
# The environment variables a pool manager hands its engines' keys in (pool_managerd.engines).
ENGINE_KEY_VARIABLES = ("LLORCH_WORKER_API_KEY", "LLAMA_API_KEY", "API_KEY")
_LOG_SUFFIXES = (".log", ".out", ".err")
_LOG_ROTATED = re.compile(r"\.log\.\d+$")


def register(secret: str, what: str) -> str:
    """Remember `secret` (described by `what`, never printed) for the scan; returns it."""
    if len(secret) < MIN_LENGTH:
        raise ValueError(f"a {what} shorter than {MIN_LENGTH} characters cannot be scanned for")
    _REGISTRY.setdefault(secret, what)
    return secret


def registered() -> dict[str, str]:
    return dict(_REGISTRY)


def new_api_key(what: str = "API key") -> str:
    """A fresh bearer key, registered."""
    return register(f"sk-{secrets.token_urlsafe(24)}", what)


def engine_keys(root_pid: int) -> dict[str, str]:
    """The engine keys in the environments of `root_pid`'s descendants (a pool manager's
    workers and engines): {key: what}. Values the test process itself has are skipped."""
    found: dict[str, str] = {}
    try:
        children = psutil.Process(root_pid).children(recursive=True)
    except psutil.Error:
        return found
    for child in children:
        try:
            environ = child.environ()
        except psutil.Error:
            continue
        for name in ENGINE_KEY_VARIABLES:
            value = environ.get(name, "")
            if len(value) >= MIN_LENGTH and os.environ.get(name) != value:
                found[value] = f"engine key ({name})"
    return found


def discover(root: Path) -> dict[str, str]:
    """Secrets stored by design under `root`: join-token and API key files, PEM keys."""
    found: dict[str, str] = {}
    for path in root.rglob("join-token"):
        token = _read(path).strip()
        if len(token) >= MIN_LENGTH:
            found[token] = "join token (join-token file)"
    for path in root.rglob("api-keys/*"):  # `llorch up`'s keys, beside their digests
        key = _read(path).strip()
        if path.suffix != ".yaml" and len(key) >= MIN_LENGTH:
            found[key] = f"API key ({path.name} key file)"
    for path in root.rglob("*.key"):
        for line in pem_private_lines(_read(path)):
            found[line] = "TLS private key material"
    return found


def pem_private_lines(text: str) -> list[str]:
    """The base64 lines of the private keys in a PEM text (any of them in a log is a leak)."""
    lines, inside = [], False
    for line in text.splitlines():
        if line.startswith("-----BEGIN") and "PRIVATE KEY" in line:
            inside = True
        elif line.startswith("-----END"):
            inside = False
        elif inside and len(line.strip()) >= MIN_LENGTH and ":" not in line:
            lines.append(line.strip())
    return lines


def forms(secret: str) -> dict[str, str]:
    """{needle: form} for the ways `secret` can appear in a log."""
    raw = secret.encode()
    found = {secret: "as is"}
    quoted = urllib.parse.quote(secret, safe="")
    found.setdefault(quoted, "percent-encoded")
    found.setdefault(raw.hex(), "hex")
    found.setdefault(raw.hex().upper(), "hex")
    for shift in range(3):  # base64 of the secret inside a longer text, at each alignment
        encoded = base64.b64encode(b"\0" * shift + raw).decode()
        end = 4 * ((shift + len(raw)) // 3)  # drop the group mixed with what follows
        core = encoded[4 if shift else 0 : end]
        if len(core) >= MIN_LENGTH:
            found.setdefault(core, "base64")
            found.setdefault(core.replace("+", "-").replace("/", "_"), "base64url")
    return found


def redact(secret: str) -> str:
    digest = hashlib.sha256(secret.encode()).hexdigest()[:8]
    return f"<{len(secret)} characters, sha256 {digest}…>"


def is_log(path: Path) -> bool:
    name = path.name
    return name.endswith(_LOG_SUFFIXES) or bool(_LOG_ROTATED.search(name))


@dataclass(frozen=True, slots=True)
class Leak:
    path: Path
    line: int
    what: str
    form: str
    secret: str = field(repr=False)  # for the caller; never shown

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: a {self.what} ({self.form}) {redact(self.secret)}"


def scan(root: Path, known: dict[str, str]) -> tuple[list[Leak], int]:
    """Every line of every log under `root` holding a secret of `known` ({secret: what})
    in one of its `forms`; and how many log files were read."""
    needles: dict[str, tuple[str, str, str]] = {}  # needle -> (secret, what, form)
    for secret, what in known.items():
        if len(secret) < MIN_LENGTH:  # the search below relies on it
            raise ValueError(f"a {what} shorter than {MIN_LENGTH} characters")
        for needle, form in forms(secret).items():
            needles.setdefault(needle, (secret, what, form))
    index = _gram_index(needles)
    leaks: list[Leak] = []
    files = 0
    for path in sorted(p for p in root.rglob("*") if is_log(p) and p.is_file()):
        files += 1
        text = _read(path)
        found: set[tuple[int, str]] = set()
        for start, needle in _occurrences(text, index):
            line = text.count("\n", 0, start) + 1
            secret, what, form = needles[needle]
            if (line, secret) in found:
                continue
            found.add((line, secret))
            if form == "as is" and text.startswith("Bearer ", start - 7):
                form = "as is, in 'Bearer <key>'"
            leaks.append(Leak(path, line, what, form, secret))
    leaks.sort(key=lambda leak: (str(leak.path), leak.line))
    return leaks, files


# Substring search for many needles at once: every needle is at least MIN_LENGTH long,
# so any occurrence covers a whole Q-gram starting at a multiple of _STEP; those grams
# are looked up in an index of every needle's Q-grams, and each hit is checked in full.
_Q = 6
_STEP = MIN_LENGTH - _Q + 1
Index = dict[str, list[tuple[str, int]]]  # Q-gram -> (needle, offset of the gram in it)


def _gram_index(needles: Iterable[str]) -> Index:
    index: Index = {}
    for needle in needles:
        for offset in range(len(needle) - _Q + 1):
            index.setdefault(needle[offset : offset + _Q], []).append((needle, offset))
    return index


def _occurrences(text: str, index: Index) -> Iterator[tuple[int, str]]:
    """(start, needle) for each needle of `index` in `text`."""
    sampled = {text[p : p + _Q] for p in range(0, len(text) - _Q + 1, _STEP)}
    seen: set[tuple[int, str]] = set()
    for gram in sampled & index.keys():
        position = text.find(gram)
        while position != -1:
            for needle, offset in index[gram]:
                start = position - offset
                if start >= 0 and (start, needle) not in seen and text.startswith(needle, start):
                    seen.add((start, needle))
                    yield start, needle
            position = text.find(gram, position + 1)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""
