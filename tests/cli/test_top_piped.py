"""``p2phost top`` without a terminal (the outsider report, D13): a view per interval as it
comes, not one at Ctrl-C; ``--once`` does not claim to refresh; headers whole at 80 columns."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import RunningRegistry, run_cli

from .conftest import new_project, running_node


def test_top_piped_prints_views_as_they_come(tmp_path: Path,
                                             official_registry: RunningRegistry) -> None:
    root = new_project(tmp_path / "alice", official_registry)
    with running_node(root):
        once = run_cli("top", "--once", "--interval", "0.2", cwd=root,
                       env={"COLUMNS": "80"})
        assert once.returncode == 0, once.stderr
        assert "Ctrl-C" not in once.stdout and "fail…" not in once.stdout, once.stdout
        assert "failed/s" in once.stdout and "failed" in once.stdout
        out = tmp_path / "top.txt"
        with out.open("w") as sink:
            process = subprocess.Popen([sys.executable, "-m", "p2phost", "top", "--interval",
                                        "0.3"], cwd=root, stdout=sink, stderr=subprocess.PIPE,
                                       env={**os.environ, "COLUMNS": "80"})
            time.sleep(4)
            process.terminate()  # SIGTERM: what was printed is in the file already
            process.wait(timeout=15)
        text = out.read_text()
        assert text.count("topics") >= 2, text
        assert "\x1b[" not in text and "Ctrl-C" not in text
