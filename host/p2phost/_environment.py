"""The plugin environment: the installed plugins of one project, switched atomically.

``.p2phost/env/current`` is a symlink to one *generation* directory, laid out like
``pip install --target``. An install fills a new generation aside and then renames a
new symlink over ``current`` — one atomic step — so a crash at any moment leaves either
the old or the new generation in place, never a half-installed one.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from p2phost_sdk import plugin_name_of

from ._fileops import BUILT_FILE, replace_file, switch

if TYPE_CHECKING:
    from importlib.metadata import Distribution

_PREFIX = "gen-"


class PluginEnvironment:
    """The installed plugins under one project's ``.p2phost/``."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.root = state_dir / "env"
        self.current = self.root / "current"

    @property
    def site_dir(self) -> Path | None:
        """The active generation, or None when nothing was ever installed."""
        return self.current.resolve() if self.current.is_symlink() else None

    def distributions(self) -> Iterator[Distribution]:
        """The distributions installed in this environment (not the host's own)."""
        site = self.site_dir
        if site is not None and site.is_dir():
            from importlib.metadata import distributions  # with email.*: only when needed

            yield from distributions(path=[str(site)])

    def installed(self) -> dict[str, Distribution]:
        """Installed distributions: plugins by plugin name, other packages by normalised name."""
        # A .dist-info left without its METADATA (a half-removed package) is not installed.
        return {plugin_name_of(d): d for d in self.distributions() if d.metadata["Name"]}

    def stage(self, *, copy_current: bool = False) -> Path:
        """A new, empty (or copied) generation directory to fill, not yet active."""
        self.root.mkdir(parents=True, exist_ok=True)
        numbers = [int(p.name[len(_PREFIX):]) for p in self.root.glob(_PREFIX + "*")
                   if p.name[len(_PREFIX):].isdigit()]
        staged = self.root / f"{_PREFIX}{max(numbers, default=0) + 1:06d}"
        site = self.site_dir
        if copy_current and site is not None:
            shutil.copytree(site, staged, symlinks=False)
        else:
            staged.mkdir()
        return staged

    def commit(self, staged: Path) -> None:
        """Make ``staged`` the active generation in one atomic step, then tidy up."""
        # fsync the files is overkill here; rename of the link is the atomic switch.
        switch(str(self.root), staged.name)
        self.collect_garbage()

    def remember(self, hashes: dict[str, str]) -> None:
        """Record that the active generation was built from files with ``hashes``
        (distribution name -> sha256). Only a hint for checks: failing to write is fine."""
        site = self.site_dir
        if site is None:
            return
        try:
            replace_file(str(self.state_dir / BUILT_FILE), built_record(site.name, hashes))
        except OSError:
            pass

    def built_from(self) -> dict[str, str] | None:
        """The hashes :meth:`remember` (or a replayed build) recorded for the active
        generation; None when unknown (another generation is active: an older p2phost's)."""
        import json

        site = self.site_dir
        try:
            data = json.loads((self.state_dir / BUILT_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if site is None or not isinstance(data, dict) or data.get("generation") != site.name:
            return None
        hashes = data.get("sha256")
        return hashes if isinstance(hashes, dict) else None

    def leftovers(self) -> list[tuple[Path, int]]:
        """What is not the active generation: (path, bytes) per generation or link that a
        finished install tidies away, and a killed one (kill -9 while staging) leaves.

        Only meaningful while no install runs (callers hold the install lock or check it).
        """
        if not self.root.is_dir():
            return []
        active = self.site_dir
        found = [(p, _size(p)) for p in sorted(self.root.glob(_PREFIX + "*"))
                 if p.resolve() != active]
        found += [(link, 0) for link in sorted(self.root.glob(".current-*"))]
        return found

    def collect_garbage(self) -> list[tuple[Path, int]]:
        """Remove generations that are not active (left by finished or killed installs);
        returns what was removed, as :meth:`leftovers` listed it."""
        removed = self.leftovers()
        for path, _ in removed:
            if path.is_symlink() or not path.is_dir():
                path.unlink(missing_ok=True)  # a switch killed before its rename
            else:
                shutil.rmtree(path, ignore_errors=True)
        return removed

    def activate(self) -> None:
        """Put the active generation first on ``sys.path`` so its plugins import."""
        site = self.site_dir
        if site is not None and str(site) not in sys.path:
            sys.path.insert(0, str(site))


def built_record(generation: str, hashes: dict[str, str]) -> bytes:
    """What ``installed.json`` holds for ``generation`` built from files with ``hashes``
    (a replay record keeps these bytes to write them as the installer would)."""
    import json

    return json.dumps({"generation": generation, "sha256": hashes}).encode()


def _size(path: Path) -> int:
    """Bytes under ``path`` (symlinks not followed)."""
    total = 0
    for directory, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(directory, name)).st_size
            except OSError:
                continue
    return total
