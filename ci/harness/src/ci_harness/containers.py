"""The build context of the project's container images: wheels only, nothing compiled.

`stage(repo)` fills `repo/.build/containers` (ignored by git), the context that
`compose.yaml` hands to `orchestratord/Containerfile` and `pool-managerd/Containerfile`:

    requirements/<image>.txt   the image's third-party pins, exported from uv.lock
    deps/*.whl                 one wheel per pin of either image: from the package index,
                               except llama-cpp-python (see below)
    local/<image>/*.whl        the workspace packages the image needs, built now

llama-cpp-python is published only as an sdist, and compiling it takes about five
minutes on two cores. The workspace builds it once, with the build settings of the root
`pyproject.toml` (AMX kernels left out); uv keeps that wheel in its cache. The wheel
copied here is the one whose shared libraries are byte for byte those installed in the
workspace's environment (compared through the wheel's RECORD hashes), so the images run
exactly the build the test suite runs. Host and images both run CPython 3.11 on Debian
bookworm, so every wheel installs there.

Each step is skipped when its result is there: the dependency wheels are downloaded
again only when the exported pins change, the workspace wheels built again only when a
file of the packages changed; and the Containerfiles copy the dependency wheels before
the workspace wheels, so a code change rebuilds one small layer.

Run as `ci/containers/stage` (or `python -m ci_harness.containers`); the compose test
calls `stage` itself.

For tests, `ensure_docker` runs `ci/containers/ensure-docker` (installs and starts what
is missing) and says whether it started dockerd, `stop_docker` stops that dockerd only,
and `Compose` runs docker-compose for one project of `compose.yaml`.

`build_fake_tgi_image` builds `llorch/fake-tgi:test`, a FAKE of TGI for tests (TGI cannot
run here: no registry, no GPU): the pool-managerd image of the staged wheels with the
faithful fake TGI server as its entrypoint (`ci/containers/fake-tgi/Containerfile`).
Docker's layer cache makes a second build take a second or two.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "FAKE_TGI_IMAGE",
    "IMAGES",
    "Compose",
    "ComposeError",
    "ImageSpec",
    "StageError",
    "build_fake_tgi_image",
    "docker_unavailable_reason",
    "ensure_docker",
    "stage",
    "stop_docker",
]


class StageError(RuntimeError):
    """The build context could not be staged; the message says what was missing."""


@dataclass(frozen=True, slots=True)
class ImageSpec:
    name: str
    export_args: tuple[str, ...]  # `uv export` selection of the image's packages


IMAGES = (
    ImageSpec("orchestratord", ("--package", "llorch-orchestratord")),
    # The pool manager spawns `python -m worker_adapters.worker` for llamacpp-inproc
    # pools: its image carries worker-adapters with llama-cpp-python.
    ImageSpec(
        "pool-managerd",
        (
            "--package",
            "llorch-pool-managerd",
            "--package",
            "llorch-worker-adapters",
            "--extra",
            "llamacpp",
        ),
    ),
)

# The sdist-only pin taken from uv's cache instead of the package index.
BUILT_HERE = "llama-cpp-python"

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)")
_STAMP = ".requirements.sha256"


def stage(repo: Path, out: Path | None = None) -> Path:
    """Fill the build context (default `repo/.build/containers`); returns its path."""
    out = out or repo / ".build" / "containers"
    out.mkdir(parents=True, exist_ok=True)
    exports = {image.name: _export(repo, image) for image in IMAGES}
    _write_requirements(out, {name: pins for name, (pins, _) in exports.items()})
    _stage_local_wheels(repo, out, {name: members for name, (_, members) in exports.items()})
    _stage_dependency_wheels(out, [pin for pins, _ in exports.values() for pin in pins])
    return out


def _run(argv: list[str], cwd: Path | None = None) -> str:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise StageError(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


def _export(repo: Path, image: ImageSpec) -> tuple[list[str], list[str]]:
    """(third-party pin lines, workspace member folders) of one image, from uv.lock."""
    text = _run(
        [
            "uv",
            "export",
            "--frozen",
            "--no-dev",
            "--no-hashes",
            "--no-annotate",
            "--no-header",
            *image.export_args,
        ],
        cwd=repo,
    )
    pins, members = [], []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("-e ./"):
            members.append(line.removeprefix("-e ./"))
        elif line and not line.startswith("#"):
            pins.append(line)
    return pins, members


def _write_requirements(out: Path, pins: dict[str, list[str]]) -> None:
    folder = out / "requirements"
    folder.mkdir(exist_ok=True)
    for name, lines in pins.items():
        _write_if_changed(folder / f"{name}.txt", "".join(f"{line}\n" for line in lines))


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def _stage_local_wheels(repo: Path, out: Path, members: dict[str, list[str]]) -> None:
    """Build every workspace package once; give each image the ones it needs. Skipped
    when no file of those packages changed since the last time."""
    local = out / "local"
    digest = _sources_digest(repo, sorted({f for folders in members.values() for f in folders}))
    stamp = local / ".sources.sha256"
    staged = all((local / image).is_dir() for image in members)
    if digest and staged and stamp.is_file() and stamp.read_text() == digest:
        return
    built = local / ".all"
    shutil.rmtree(built, ignore_errors=True)
    built.mkdir(parents=True)
    _run(["uv", "build", "--all-packages", "--wheel", "--quiet", "-o", str(built)], cwd=repo)
    for image, folders in members.items():
        target = local / image
        wanted = {_wheel_prefix(_project_name(repo / folder)) for folder in folders}
        wheels = {w for w in built.glob("*.whl") if w.name.split("-", 1)[0] in wanted}
        found = {w.name.split("-", 1)[0] for w in wheels}
        if found != wanted:
            raise StageError(f"uv build made no wheel for {sorted(wanted - found)}")
        _sync_folder(target, wheels)
    shutil.rmtree(built)
    stamp.write_text(digest)


def _sources_digest(repo: Path, folders: list[str]) -> str:
    """sha256 over the files git does not ignore in `folders` (what the wheels are
    built from); "" when git cannot list them (then the wheels are always built)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", *folders],
            cwd=repo,
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return ""
    digest = hashlib.sha256()
    for name in sorted(set(listed.decode().split("\0")) - {""}):
        path = repo / name
        if path.is_file():
            digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _project_name(folder: Path) -> str:
    with (folder / "pyproject.toml").open("rb") as handle:
        return str(tomllib.load(handle)["project"]["name"])


def _wheel_prefix(distribution: str) -> str:
    return re.sub(r"[-_.]+", "_", distribution).lower()


def _sync_folder(target: Path, files: set[Path]) -> None:
    """Make `target` hold exactly `files` (same names, same bytes); unchanged files are
    left alone, so their times do not move."""
    target.mkdir(parents=True, exist_ok=True)
    names = {f.name for f in files}
    for stale in target.iterdir():
        if stale.name not in names:
            stale.unlink()
    for source in files:
        copy = target / source.name
        if not copy.exists() or copy.read_bytes() != source.read_bytes():
            shutil.copyfile(source, copy)


def _stage_dependency_wheels(out: Path, pins: list[str]) -> None:
    deps = out / "deps"
    wanted = sorted(set(pins))
    digest = hashlib.sha256("\n".join(wanted).encode()).hexdigest()
    if (deps / _STAMP).is_file() and (deps / _STAMP).read_text() == digest:
        return
    fresh = out / "deps.new"
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir()
    from_index = [p for p in wanted if _pin(p)[0] != BUILT_HERE]
    (out / "deps.txt").write_text("".join(f"{line}\n" for line in from_index))
    # pip evaluates the environment markers of the pins for this interpreter: CPython
    # 3.11 on Linux x86-64, as in the images.
    _run(
        [
            "uv",
            "tool",
            "run",
            "--python",
            "3.11",
            "--from",
            "pip",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "--dest",
            str(fresh),
            "--requirement",
            str(out / "deps.txt"),
        ]
    )
    (out / "deps.txt").unlink()
    for pin in wanted:
        name, version = _pin(pin)
        if name == BUILT_HERE:
            shutil.copyfile(wheel := _workspace_build(name, version), fresh / wheel.name)
    (fresh / _STAMP).write_text(digest)
    shutil.rmtree(deps, ignore_errors=True)
    fresh.rename(deps)


def _pin(line: str) -> tuple[str, str]:
    match = _PIN.match(line)
    if match is None:
        raise StageError(f"not an exact pin: {line!r}")
    return re.sub(r"[-_.]+", "-", match[1]).lower(), match[2]


def _workspace_build(distribution: str, version: str) -> Path:
    """The wheel in uv's cache whose native libraries are the ones installed here."""
    try:
        installed = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError as exc:
        raise StageError(f"{distribution} is not installed here: run `uv sync`") from exc
    if installed.version != version:
        raise StageError(f"{distribution} {installed.version} installed, {version} locked")
    native = _native_hashes(installed.read_text("RECORD") or "")
    if not native:
        raise StageError(f"the installed {distribution} lists no native libraries")
    cache = Path(_run(["uv", "cache", "dir"]).strip())
    pattern = f"{_wheel_prefix(distribution)}-{version}-*.whl"
    candidates = sorted(cache.glob(f"sdists-v*/**/{pattern}"), key=_mtime, reverse=True)
    for wheel in candidates:
        try:
            with zipfile.ZipFile(wheel) as archive:
                record = next(n for n in archive.namelist() if n.endswith(".dist-info/RECORD"))
                if _native_hashes(archive.read(record).decode()) == native:
                    return wheel
        except (zipfile.BadZipFile, StopIteration, OSError):
            continue
    raise StageError(
        f"no wheel of {distribution} {version} in uv's cache ({cache}) matches the installed "
        f"build ({len(candidates)} looked at); `uv sync --reinstall-package {distribution}` "
        "builds it again and files it there"
    )


def _native_hashes(record: str) -> dict[str, str]:
    hashes = {}
    for line in record.splitlines():
        path, _, rest = line.partition(",")
        if re.search(r"\.so(\.\d+)*$", path):
            hashes[path] = rest.partition(",")[0]
    return hashes


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


class ComposeError(RuntimeError):
    """A docker-compose or docker command failed; the message holds its output."""


def docker_unavailable_reason() -> str:
    """Why Docker cannot run here at all ("" when it can, or may after installing):
    its engine needs Linux, and installing and starting it needs root (or sudo without
    a password) unless a daemon already answers."""
    if sys.platform != "linux":
        return f"Docker's engine needs Linux (this is {sys.platform})"
    if os.geteuid() == 0 or _succeeds(["docker", "info"]):
        return ""
    if shutil.which("sudo") and _succeeds(["sudo", "-n", "true"]):
        return ""
    return "no Docker daemon answers and installing one needs root or sudo without a password"


def _succeeds(argv: list[str]) -> bool:
    try:
        return subprocess.run(argv, capture_output=True, timeout=30, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def ensure_docker(repo: Path, timeout_s: float = 600.0) -> bool:
    """Make Docker usable (`ci/containers/ensure-docker`); True when this call started
    dockerd, which `stop_docker` then stops."""
    done = subprocess.run(
        [str(repo / "ci" / "containers" / "ensure-docker")],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if done.returncode != 0:
        raise ComposeError(f"ensure-docker failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return done.stdout.strip().splitlines()[-1] == "started"


def stop_docker(repo: Path, timeout_s: float = 60.0) -> None:
    """Stop the dockerd that `ensure_docker` started (and no other)."""
    subprocess.run([str(repo / "ci" / "containers" / "stop-docker")], timeout=timeout_s, check=True)


@dataclass(frozen=True, slots=True)
class Compose:
    """docker-compose (v1: the project name goes in -p) for one project of a file."""

    file: Path
    project: str
    env: dict[str, str]

    def __call__(self, *args: str, timeout_s: float = 300.0) -> str:
        argv = [
            "docker-compose",
            "--ansi",
            "never",
            "-p",
            self.project,
            "-f",
            str(self.file),
            *args,
        ]
        return _checked(argv, {**os.environ, **self.env}, timeout_s)

    def leftovers(self) -> dict[str, list[str]]:
        """Containers, networks and volumes still labelled with this project."""
        label = f"label=com.docker.compose.project={self.project}"
        listings = {
            "containers": ["docker", "ps", "--all", "--quiet", "--filter", label],
            "networks": ["docker", "network", "ls", "--quiet", "--filter", label],
            "volumes": ["docker", "volume", "ls", "--quiet", "--filter", label],
        }
        return {
            kind: _checked(argv, dict(os.environ), 60.0).split() for kind, argv in listings.items()
        }


def _checked(argv: list[str], env: dict[str, str], timeout_s: float) -> str:
    done = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=timeout_s, check=False
    )
    if done.returncode != 0:
        raise ComposeError(
            f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout[-3000:]}"
            f"{done.stderr[-6000:]}"
        )
    return done.stdout


FAKE_TGI_IMAGE = "llorch/fake-tgi:test"
_FAKE_TGI_BASE = "llorch/fake-tgi-base:test"


def build_fake_tgi_image(repo: Path, timeout_s: float = 900.0) -> str:
    """Stage the wheels, build the pool-managerd image on them and the fake TGI image on
    that (see module doc); returns the fake's tag. ComposeError when a build fails."""
    context = stage(repo)
    env = dict(os.environ)
    _checked(
        [
            "docker",
            "build",
            "--quiet",
            "-t",
            _FAKE_TGI_BASE,
            "-f",
            str(repo / "pool-managerd" / "Containerfile"),
            str(context),
        ],
        env,
        timeout_s,
    )
    _checked(
        [
            "docker",
            "build",
            "--quiet",
            "-t",
            FAKE_TGI_IMAGE,
            "--build-arg",
            f"BASE={_FAKE_TGI_BASE}",
            "-f",
            str(repo / "ci" / "containers" / "fake-tgi" / "Containerfile"),
            str(repo / "ci" / "containers" / "fake-tgi"),
        ],
        env,
        timeout_s,
    )
    return FAKE_TGI_IMAGE


def main() -> int:
    repo = Path(os.environ.get("LLORCH_REPO", Path.cwd()))
    try:
        print(stage(repo))
    except StageError as exc:
        print(f"stage: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
