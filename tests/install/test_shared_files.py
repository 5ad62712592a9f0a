"""Generations hard-link files unpacked once into the download cache: a file written to
through one project's link must not reach another project's install, and doctor and sync
must see and repair it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .conftest import Workspace

Make = Callable[..., Workspace]


def _module(ws: Workspace, name: str) -> Path:
    """A Python file of the installed plugin ``name`` in ``ws``'s plugin environment."""
    from p2phost._environment import PluginEnvironment

    dist = PluginEnvironment(ws.root / ".p2phost").installed()[name]
    return next(Path(str(dist.locate_file(f))) for f in dist.files or () if f.suffix == ".py")


def test_a_file_written_through_a_link_is_not_installed_again(workspace: Make) -> None:
    first, second = workspace("first"), workspace("second")
    for ws in (first, second):
        ws.ok("plugin", "install", "alpha", "--yes")
    written, shared = _module(first, "alpha"), _module(second, "alpha")
    original = written.read_bytes()
    # A plugin writing to its own file (read-only stops neither root nor a chmod first).
    written.chmod(0o644)
    written.write_bytes(original + b"\nraise SystemExit('changed through a link')\n")
    assert shared.read_bytes() != original  # one inode: the cache's copy changed too

    # A new project gets the wheel's file, not the changed one: the tree is unpacked again.
    third = workspace("third")
    third.ok("plugin", "install", "alpha", "--yes")
    assert _module(third, "alpha").read_bytes() == original

    # The project that shares the changed file: doctor names it, sync puts the wheel's back.
    done = second.cli("doctor")
    assert done.returncode != 0 and "has lost or changed" in done.stdout + done.stderr, done.stdout
    second.ok("plugin", "sync")
    assert _module(second, "alpha").read_bytes() == original
    done = second.cli("doctor")
    assert "(changed)" not in done.stdout + done.stderr
