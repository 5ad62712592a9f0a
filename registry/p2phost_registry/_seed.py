"""Build plugin projects and publish them straight into a store (``registry seed``).

Projects built by plain hatchling are built in this process, one after another, which
is many times faster than a ``python -m build`` subprocess with an isolated environment
per project; any other build backend goes through ``python -m build``.
"""

from __future__ import annotations

import contextlib
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


@dataclass(frozen=True)
class SeedResult:
    """What happened to one built file: ``published``, ``exists`` or ``failed``."""

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


def build(project: Path, outdir: Path) -> list[Path]:
    """Build a wheel and an sdist of ``project`` into ``outdir``."""
    if not (project / "pyproject.toml").is_file():
        raise BadRequest(f"{project}: no pyproject.toml; is this a plugin project?")
    try:
        if _in_process(project):
            from hatchling.build import build_sdist, build_wheel

            with contextlib.chdir(project):
                names = [build_wheel(str(outdir)), build_sdist(str(outdir))]
            return [outdir / n for n in names]
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


def seed(
    store: Store,
    projects: list[Path],
    owner: str = OFFICIAL_OWNER,
    progress: Callable[[SeedResult], None] | None = None,
) -> list[SeedResult]:
    """Build every project and publish its files as ``owner``; already-published files stay."""
    actor = Actor(owner)
    results: list[SeedResult] = []
    for project in projects:
        for result in _seed_one(store, actor, project):
            results.append(result)
            if progress is not None:
                progress(result)
    return results


def _seed_one(store: Store, actor: Actor, project: Path) -> Iterator[SeedResult]:
    with tempfile.TemporaryDirectory(prefix="p2phost-seed-") as tmp:
        try:
            built = build(project, Path(tmp))
        except RegistryError as exc:
            yield SeedResult(project, "", "failed", str(exc))
            return
        for path in built:
            try:
                store.publish(actor, path, path.name)
            except Conflict as exc:
                outcome = "exists" if "already exists" in str(exc) else "failed"
                yield SeedResult(project, path.name, outcome, str(exc))
            except RegistryError as exc:
                yield SeedResult(project, path.name, "failed", str(exc))
            else:
                yield SeedResult(project, path.name, "published")
