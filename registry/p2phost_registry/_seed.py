"""Publish built files, or plugin projects built here, straight into a store (``registry seed``).

``seed`` takes wheels and sdists (a ``FILE.sig`` beside one is published as its signature),
folders of them (``dist/``, or the built-in source inside p2phost), and plugin projects. Only
projects need a build backend: plain-hatchling projects are built in this process when
hatchling is importable (many times faster than an isolated ``python -m build`` each),
others with ``python -m build``; without either, seed says what to install.
"""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement

from ._errors import BadRequest, Conflict, RegistryError
from ._records import Actor
from ._store import Store

#: Who owns what ``seed`` publishes.
OFFICIAL_OWNER = "p2phost"
_BUILT = (".whl", ".tar.gz")


@dataclass(frozen=True)
class SeedResult:
    """What happened to one file: ``published``, ``exists`` or ``failed``."""

    project: Path
    filename: str
    outcome: str
    message: str = ""


def plugin_projects(root: Path) -> list[Path]:
    """The plugin projects directly under ``root`` (directories with a pyproject.toml)."""
    return sorted(p.parent for p in root.glob("*/pyproject.toml"))


def _in_process(project: Path) -> bool:
    data = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))
    system = data.get("build-system", {})
    try:
        requires = [Requirement(r).name for r in system.get("requires", [])]
    except InvalidRequirement:
        return False
    return system.get("build-backend") == "hatchling.build" and requires == ["hatchling"]


def _have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def build(project: Path, outdir: Path) -> list[Path]:
    """Build a wheel and an sdist of ``project`` into ``outdir``."""
    if not (project / "pyproject.toml").is_file():
        raise BadRequest(f"{project}: no pyproject.toml; is this a plugin project?")
    try:
        if _in_process(project) and _have("hatchling"):
            from hatchling.build import build_sdist, build_wheel

            with contextlib.chdir(project):
                names = [build_wheel(str(outdir)), build_sdist(str(outdir))]
            return [outdir / n for n in names]
        if not _have("build"):
            raise BadRequest(
                f"{project}: building a project needs a build backend, and neither hatchling "
                "nor build is installed: pip install build (or hatchling), or pass the "
                "project's built wheel instead")
        before = set(outdir.iterdir())
        subprocess.run(
            [sys.executable, "-m", "build", "--wheel", "--sdist", "--outdir", str(outdir),
             str(project)],
            check=True, capture_output=True, text=True, timeout=600,
        )
        return sorted(set(outdir.iterdir()) - before)
    except subprocess.CalledProcessError as exc:
        tail = (exc.stderr or exc.stdout or "").strip().splitlines()[-3:]
        raise BadRequest(f"{project}: the build failed: {' | '.join(tail)}") from exc
    except (ImportError, subprocess.TimeoutExpired, OSError, ValueError) as exc:
        raise BadRequest(f"{project}: the build failed: {exc}") from exc


def built_files(folder: Path) -> list[Path]:
    """The wheels and sdists in ``folder`` (not in its sub-folders)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(_BUILT))


def seed(
    store: Store,
    paths: list[Path],
    owner: str = OFFICIAL_OWNER,
    progress: Callable[[SeedResult], None] | None = None,
) -> list[SeedResult]:
    """Publish every file, folder of files or project in ``paths`` as ``owner``.

    Files already published stay as they are (``exists``).
    """
    actor = Actor(owner)
    results: list[SeedResult] = []
    for path in paths:
        for result in _seed_one(store, actor, path):
            results.append(result)
            if progress is not None:
                progress(result)
    return results


def _seed_one(store: Store, actor: Actor, path: Path) -> Iterator[SeedResult]:
    if path.is_file() and path.name.endswith(_BUILT):
        yield _publish(store, actor, path, path)
    elif path.is_dir() and not (path / "pyproject.toml").is_file():
        files = built_files(path)
        if not files:
            yield SeedResult(path, "", "failed",
                             f"{path}: no wheels or sdists, and no pyproject.toml")
        for file in files:
            yield _publish(store, actor, file, path)
    elif path.is_dir():
        with tempfile.TemporaryDirectory(prefix="p2phost-seed-") as tmp:
            try:
                built = build(path, Path(tmp))
            except RegistryError as exc:
                yield SeedResult(path, "", "failed", str(exc))
                return
            for file in built:
                yield _publish(store, actor, file, path)
    else:
        yield SeedResult(path, "", "failed",
                         f"{path}: not a wheel, an sdist, a folder of them or a project")


def _publish(store: Store, actor: Actor, file: Path, origin: Path) -> SeedResult:
    """Publish a copy of ``file`` (the store consumes what it is given)."""
    sig = file.with_name(file.name + ".sig")
    try:
        signature = sig.read_bytes() if sig.is_file() else None
        upload = store.new_upload_path()
        shutil.copyfile(file, upload)
    except OSError as exc:
        return SeedResult(origin, file.name, "failed", f"cannot read {file}: {exc}")
    try:
        store.publish(actor, upload, file.name, signature=signature)
    except Conflict as exc:
        outcome = "exists" if "already exists" in str(exc) else "failed"
        return SeedResult(origin, file.name, outcome, str(exc))
    except RegistryError as exc:
        return SeedResult(origin, file.name, "failed", str(exc))
    return SeedResult(origin, file.name, "published")
