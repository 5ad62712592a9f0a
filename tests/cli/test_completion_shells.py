"""The completion scripts ``p2phost completion zsh|fish`` prints work in the real shells:
zsh, driven through a pseudo-terminal, completes ``p2phost pl<TAB>`` to ``plugin``; fish's
``complete -C`` lists the subcommands and plugin names. Skipped, saying how to install
it, where the shell is not installed."""

from __future__ import annotations

import os
import re
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import run_cli

#: Terminal escapes (colours, cursor moves, bracketed paste) between what zsh draws.
_ESCAPES = re.compile(r"\x1b(\[[0-9;?]*[A-Za-z]|[=>])|[\x07\x08\r]")


def _shell(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (apt-get install {name}): its completion "
                    "script is checked by test_startup.py's script test only")
    return path


def _env(home: Path) -> dict[str, str]:
    # p2phost on PATH as the user's shell finds it; a home of its own (no rc files, caches).
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}",
            "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_DATA_HOME": str(home / ".local" / "share"), "TERM": "xterm"}


def _project(root: Path) -> Path:
    root.mkdir()
    (root / "p2phost.toml").write_text('[node]\nlisten = []\n[plugins]\necho = "*"\n'
                                       'chat = "*"\n')
    return root


class Terminal:
    """An interactive shell on a pseudo-terminal: type, then read until text shows."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.master, slave = os.openpty()
        self.process = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave,
                                        cwd=cwd, env=env, start_new_session=True)
        os.close(slave)
        self.screen = ""

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def wait_for(self, text: str, timeout: float = 30.0) -> str:
        """Read until ``text`` shows (escapes removed); everything read, or fail."""
        deadline = time.monotonic() + timeout
        while text not in _ESCAPES.sub("", self.screen):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{text!r} never showed; the terminal read: "
                                     f"{_ESCAPES.sub('', self.screen)[-600:]!r}")
            if select.select([self.master], [], [], min(left, 0.5))[0]:
                try:
                    self.screen += os.read(self.master, 65536).decode(errors="replace")
                except OSError:  # the shell exited
                    break
        return _ESCAPES.sub("", self.screen)

    def close(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)
        os.close(self.master)


def test_zsh_completes_a_subcommand_with_the_script(tmp_path: Path) -> None:
    zsh = _shell("zsh")
    script = tmp_path / "_p2phost"
    script.write_text(run_cli("completion", "zsh", check=True).stdout)
    root = _project(tmp_path / "project")
    terminal = Terminal([zsh, "-f", "-i"], root, _env(tmp_path))
    try:
        # compinit as a user's .zshrc runs it; the script as `fpath` would load it.
        terminal.type(f"PS1='> '; autoload -U compinit; compinit -u -D; "
                      f"source {script}; print SCRIPT' 'LOADED\n")
        terminal.wait_for("SCRIPT LOADED")
        terminal.type("p2phost pl\t")
        terminal.wait_for("p2phost plugin ")  # the word completed, a space after it
        terminal.type("\x15p2phost plugin remove e\t")  # Ctrl-U, then a plugin name
        terminal.wait_for("p2phost plugin remove echo ")
    finally:
        terminal.close()


def test_fish_completes_subcommands_and_plugin_names_with_the_script(tmp_path: Path) -> None:
    fish = _shell("fish")
    script = tmp_path / "p2phost.fish"
    script.write_text(run_cli("completion", "fish", check=True).stdout)
    root = _project(tmp_path / "project")

    def complete(line: str) -> list[str]:
        done = subprocess.run([fish, "--no-config", "-c", f"source {script}; complete -C '{line}'"],
                              cwd=root, env=_env(tmp_path), capture_output=True, text=True,
                              timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        return [row.split("\t")[0] for row in done.stdout.splitlines()]

    assert complete("p2phost pl") == ["plugin"]
    assert "remove" in complete("p2phost plugin re")
    assert complete("p2phost plugin remove e") == ["echo"]
