"""``p2phost run`` in a real OS process, with its output collected as it comes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest


def free_port() -> int:
    """A TCP port free right now on 127.0.0.1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RunningNode:
    """One ``p2phost run`` process of the project at ``root``."""

    def __init__(self, root: Path, timeout: float = 30, *,
                 prefix: Sequence[str] = (), listening: bool = True) -> None:
        """Start it (``prefix``: e.g. ``ip netns exec NS`` to run it in a namespace);
        ``listening``: wait for its first "listening on" line (``address``, else "")."""
        self.root = root
        self.stderr_path = root / f"stderr-{time.monotonic_ns()}.log"
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [*prefix, sys.executable, "-m", "p2phost", "run"], cwd=root, text=True,
            stdout=subprocess.PIPE, stderr=self.stderr_path.open("w"),
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.peer_id = self.wait_for("peer id: ", timeout).split(": ", 1)[1]
        self.address = self.wait_for("listening on ", timeout).split(" on ", 1)[1] \
            if listening else ""

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def stderr(self) -> str:
        """What the node logged so far."""
        return self.stderr_path.read_text()

    def wait_for(self, prefix: str, timeout: float = 10) -> str:
        """The first output line starting with ``prefix``; fails the test after ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if line.startswith(prefix):
                    return line
            if self.process.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.02)
        pytest.fail(f"no line {prefix!r} from the node in {self.root} (exit "
                    f"{self.process.poll()}):\n{chr(10).join(self.lines)}\n{self.stderr}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        """Send ``sig`` and wait for the exit code (SIGKILL if it hangs)."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
                pytest.fail(f"the node in {self.root} did not stop on signal {sig}")
        self._reader.join(5)
        return self.process.returncode
