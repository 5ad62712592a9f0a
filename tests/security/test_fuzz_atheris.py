"""The coverage-guided fuzzer (atheris_node.py) runs for a bounded time and finds nothing."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

HARNESS = Path(__file__).resolve().parent / "atheris_node.py"
SECONDS = 15


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None,
                    reason="atheris is not installed (it has wheels for Linux x86_64 only)")
def test_atheris_finds_no_crash_in_a_node_for_a_bounded_time(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(HARNESS), f"-max_total_time={SECONDS}", "-rss_limit_mb=2048",
         f"-artifact_prefix={tmp_path}/"],
        capture_output=True, text=True, timeout=SECONDS + 60, cwd=tmp_path)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    runs = int(output.rsplit("Done ", 1)[1].split()[0])
    assert runs > 100, output[-2000:]
