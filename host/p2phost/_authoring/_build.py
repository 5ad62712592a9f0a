"""``plugin build``: a wheel and an sdist with the standard ``build`` front end, checked.

The wheel must carry the plugin metadata (``p2phost-plugin.toml`` in its ``.dist-info``):
the registry refuses uploads without it, so a build that lost it fails here, early.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from p2phost_sdk import PluginMetadata, PluginMetadataError, normalize_name

from ._errors import BuildError
from ._pyproject import PluginProject

#: How long one build may take (an isolated build installs its backend first).
BUILD_TIMEOUT = 600.0


def build(project: PluginProject, outdir: Path | None = None, *, isolation: bool = True
          ) -> list[Path]:
    """Build ``project`` into ``outdir`` (default ``dist/``); the sdist and wheel made."""
    try:
        PluginMetadata.from_pyproject(project.root)
    except PluginMetadataError as exc:
        raise BuildError(f"cannot build {project.root}: {exc}",
                         fix="p2phost plugin check lists every problem") from None
    outdir = (outdir or project.root / "dist").resolve()
    started = time.time()
    command = [sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", str(outdir),
               str(project.root)]
    if not isolation:
        command.insert(3, "--no-isolation")
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=BUILD_TIMEOUT,
                              check=False)
    except subprocess.TimeoutExpired:
        raise BuildError(f"building {project.root} took over {BUILD_TIMEOUT:.0f} s",
                         fix="try --no-isolation (uses this environment's hatchling)") from None
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        if "No module named build" in tail:
            fix = "pip install build"
        elif "BackendUnavailable" in tail or "Cannot import" in tail:
            fix = "install the build backend here (pip install hatchling), or drop --no-isolation"
        else:
            fix = "fix what the build says above, then build again"
        raise BuildError(f"python -m build failed for {project.root}:\n{tail}", fix=fix)
    made = sorted(p for p in outdir.iterdir() if p.is_file() and p.stat().st_mtime >= started - 1
                  and p.name.endswith((".whl", ".tar.gz")))
    wheels = [p for p in made if p.suffix == ".whl"]
    if not wheels:
        raise BuildError(f"python -m build made no wheel in {outdir}",
                         fix="check [build-system] in pyproject.toml")
    for wheel in wheels:
        verify_wheel(wheel, project)
    return made


def verify_wheel(wheel: Path, project: PluginProject | None = None) -> PluginMetadata:
    """The plugin metadata a wheel carries; BuildError when it carries none or the wrong one."""
    try:
        meta = PluginMetadata.from_wheel(wheel)
    except PluginMetadataError as exc:
        raise BuildError(
            f"{wheel.name} is not a p2phost plugin wheel: {'; '.join(exc.problems)}",
            fix='add to pyproject.toml: [tool.hatch.build.targets.wheel.extra-metadata] '
                '"pyproject.toml" = "p2phost-plugin.toml"') from None
    if project is not None and (meta.dist_name, meta.version) != (normalize_name(project.name),
                                                                  project.version):
        raise BuildError(f"{wheel.name} is {meta.dist_name} {meta.version}, but pyproject.toml "
                         f"says {project.name} {project.version}",
                         fix="remove stale files from dist/ and build again")
    return meta
