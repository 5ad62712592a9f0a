"""The README tour and every docs/ block marked ``<!-- runnable -->`` run as written.

Each page's runnable blocks run in order in one bash (``cd`` carries over), in an empty
directory, without a terminal; every command must exit with 0. They run in a private network
namespace when one can be made, so the fixed ports of the examples (7400) meet no other test,
with a registry serving the official plugins inside it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, RunningRegistry

MARKER = "<!-- runnable -->"


def runnable_blocks(page: Path) -> list[str]:
    """The fenced blocks that directly follow a ``<!-- runnable -->`` line, in order."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks = []
    for i, line in enumerate(lines):
        if line.strip() != MARKER:
            continue
        start = next((j for j in range(i + 1, len(lines)) if lines[j].strip()), None)
        if start is None or not lines[start].lstrip().startswith("```"):
            raise AssertionError(f"{page.name}:{i + 1}: {MARKER} is not followed by a "
                                 "fenced block")
        end = next(j for j in range(start + 1, len(lines)) if lines[j].strip() == "```")
        blocks.append("\n".join(lines[start + 1:end]))
    return blocks


PAGES = [p for p in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
         if runnable_blocks(p)]

_PRELUDE = """\
set -e
trap 'echo "command failed with status $?: $BASH_COMMAND" >&2' ERR
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true' EXIT
if [ -n "$P2PHOST_TEST_NETNS" ]; then
  ip link set lo up
  p2phost registry serve --port 0 --data "$P2PHOST_TEST_REGISTRY_DATA" \\
    >"$P2PHOST_TEST_LOGS/registry.log" 2>&1 &
  for _ in $(seq 1 300); do
    grep -q "listening on" "$P2PHOST_TEST_LOGS/registry.log" 2>/dev/null && break
    sleep 0.1
  done
  P2PHOST_REGISTRY=$(grep -oE 'http://[^ ]+' "$P2PHOST_TEST_LOGS/registry.log" | head -n1)
  export P2PHOST_REGISTRY
fi
"""


def _namespaced() -> bool:
    if sys.platform != "linux" or not shutil.which("unshare") or not shutil.which("ip"):
        return False
    probe = subprocess.run(["unshare", "-n", "ip", "link", "set", "lo", "up"],
                           capture_output=True, timeout=30, check=False)
    return probe.returncode == 0


def test_every_page_with_runnable_blocks_is_found() -> None:
    assert REPO / "README.md" in PAGES
    assert REPO / "docs" / "cli.md" in PAGES


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_runnable_blocks_run(page: Path, tmp_path: Path,
                             official_registry: RunningRegistry) -> None:
    work, logs = tmp_path / "work", tmp_path / "logs"
    work.mkdir()
    logs.mkdir()
    script = _PRELUDE + "\n".join(runnable_blocks(page)) + "\n"
    namespaced = _namespaced()
    env = {**os.environ, "P2PHOST_CACHE_DIR": str(tmp_path / "cache"),
           "P2PHOST_TEST_REGISTRY_DATA": str(official_registry.data),
           "P2PHOST_TEST_LOGS": str(logs), "HOME": str(tmp_path / "home"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    if namespaced:
        env["P2PHOST_TEST_NETNS"] = "1"
        command = ["unshare", "-n", "bash", "-c", script]
    else:  # no namespaces here: the shared loopback and the session's registry
        env["P2PHOST_REGISTRY"] = official_registry.url
        command = ["bash", "-c", script]
    done = subprocess.run(command, cwd=work, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=300, check=False,
                          start_new_session=True)
    assert done.returncode == 0, (f"{page.name}: a runnable block failed\n--- stdout\n"
                                  f"{done.stdout}\n--- stderr\n{done.stderr}")
