"""One command does each piece of work once: an install or a sync verifies each signature
once (the built-in source's check, the lock's doubts and the new lock's check used to
verify it again), and reads ``.p2phost/installed.json`` once to plan and once under the
install lock (it was read again for every check and every planned change)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.install.conftest import Workspace

# Runs `p2phost ARGS` counting Ed25519 verifications (by signed message) and reads of
# installed.json, printed last on stderr.
_COUNTING = """
import atexit, collections, sys
import p2phost_sdk._identity as identity
from p2phost._environment import PluginEnvironment
from p2phost._cli.main import run

verified, reads = collections.Counter(), []
verify, built_from = identity.verify, PluginEnvironment.built_from

def counted_verify(peer, signature, data):
    verified[data] += 1
    return verify(peer, signature, data)

def counted_built_from(self):
    reads.append(1)
    return built_from(self)

identity.verify, PluginEnvironment.built_from = counted_verify, counted_built_from
atexit.register(lambda: print("counts", len(verified), max(verified.values(), default=0),
                              len(reads), file=sys.stderr))
run(sys.argv[1:])
"""


def _counted(ws: Workspace, env: dict[str, str], *args: str) -> tuple[int, int, int]:
    """(signatures verified, most verifications of one, installed.json reads) of a
    successful ``p2phost ARGS`` in ``ws``."""
    done = subprocess.run([sys.executable, "-c", _COUNTING, *args], cwd=ws.root,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "P2PHOST_CACHE_DIR": str(ws.cache), **env})
    assert done.returncode == 0, done.stderr
    last = done.stderr.splitlines()[-1].split()
    assert last[0] == "counts", done.stderr
    signatures, most, reads = map(int, last[1:])
    return signatures, most, reads


def test_an_install_verifies_each_signature_once_and_reads_its_record_once_per_phase(
        workspace: Callable[..., Workspace], builtin_plugins: Path) -> None:
    ws = workspace(plugins={"echo": "*", "tcp-transport": "*"})
    env = {"P2PHOST_REGISTRY": "", "P2PHOST_BUILTIN_DIR": str(builtin_plugins),
           "P2PHOST_REPLAY": "0"}
    assert _counted(ws, env, "plugin", "install", "--yes") == (2, 1, 2)
    # A signed plugin added to two locked ones: each of the three is verified once.
    assert _counted(ws, env, "plugin", "install", "noise-security", "--yes") == (3, 1, 2)
    assert _counted(ws, env, "plugin", "sync") == (3, 1, 2)
