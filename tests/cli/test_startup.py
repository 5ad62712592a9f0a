"""Start-up: ``--version`` and ``--help`` import none of the commands; ``-h`` everywhere;
shell completion of commands, plugin names and peer addresses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_cli

#: Modules no start-up probe may load: each costs tens of milliseconds.
HEAVY = ("p2phost_sdk", "p2phost._runtime", "p2phost._install", "p2phost._plugins",
         "p2phost._authoring", "pluggy", "httpx", "rich", "tomlkit", "nacl", "asyncio", "pydantic",
         "jinja2")
COMMAND_MODULES = ("project", "node", "describe", "plugin", "authoring", "keys", "registry",
                   "dead", "trust", "completion")


def _imported_by(*args: str, cwd: Path | None = None) -> set[str]:
    """The modules ``p2phost ARGS`` has loaded when it exits (in a fresh interpreter)."""
    code = ("import atexit, json, sys\n"
            "atexit.register(lambda: print('MODULES=' + json.dumps(sorted(sys.modules))))\n"
            "from p2phost._cli.main import run\n"
            f"run({list(args)!r})\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False, cwd=cwd)
    line = next(li for li in done.stdout.splitlines() if li.startswith("MODULES="))
    return set(json.loads(line.removeprefix("MODULES=")))


def _heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules for h in HEAVY if m == h or m.startswith(h + "."))


def test_version_imports_no_heavy_module() -> None:
    modules = _imported_by("--version")
    assert _heavy(modules) == []
    assert "typer" not in modules and "click" not in modules


def test_help_imports_no_command() -> None:
    fast = _imported_by("--help")
    assert _heavy(fast) == [] and "typer" not in fast
    # Through typer too (as ``p2phost --debug --help`` or ``p2phost plugin --help`` go):
    # the listing comes from the table, not from the commands.
    modules = _imported_by("--debug", "--help")
    assert _heavy(modules) == []
    assert [m for m in COMMAND_MODULES if f"p2phost._cli.{m}" in modules] == []


def test_a_command_imports_only_its_own_modules() -> None:
    modules = _imported_by("completion", "bash")
    assert "p2phost._cli.completion" in modules
    assert not {"p2phost._cli.node", "p2phost._cli.plugin", "p2phost._runtime",
                "p2phost._install"} & modules


def test_init_and_id_load_neither_the_runtime_nor_the_installer(tmp_path: Path) -> None:
    for args in (("init", str(tmp_path / "p")), ("id",)):
        modules = _imported_by(*args, cwd=tmp_path / "p" if args == ("id",) else tmp_path)
        assert "p2phost._cli.node" in modules or args[0] == "init"
        assert not [m for m in modules
                    if m.startswith(("p2phost._runtime", "p2phost._install", "p2phost._plugins"))]


def test_the_help_listing_is_each_commands_own_help() -> None:
    from p2phost._cli._app import COMMANDS, load_command

    for name, (_, listed) in COMMANDS.items():
        own = " ".join((load_command(name).help or "").split("\n\n")[0].split())
        assert own == listed, f"COMMANDS[{name!r}] says {listed!r}, the command {own!r}"


def test_version_is_the_same_with_and_without_the_fast_path() -> None:
    from p2phost import __version__
    from p2phost_sdk import HOST_API

    fast = run_cli("--version", check=True).stdout
    slow = run_cli("--debug", "--version", check=True).stdout
    assert fast == slow
    assert fast.startswith(f"p2phost {__version__} (host-api {HOST_API}, Python ")


@pytest.mark.parametrize("args", [("-h",), ("plugin", "-h"), ("plugin", "install", "-h"),
                                  ("run", "-h"), ("registry", "token", "-h")])
def test_dash_h_is_help(args: tuple[str, ...]) -> None:
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr
    assert "Usage: p2phost" in done.stdout


def test_unknown_command_is_one_clear_error() -> None:
    done = run_cli("plugn")
    assert done.returncode == 2 and "No such command 'plugn'" in done.stderr


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_script_per_shell(shell: str) -> None:
    done = run_cli("completion", shell, check=True)
    assert "_P2PHOST_COMPLETE=complete_" + shell in done.stdout
    refused = run_cli("completion", "tcsh")
    assert refused.returncode == 2 and "fix: p2phost completion bash | zsh | fish" \
        in refused.stderr


def _complete(cwd: Path, words: str) -> list[str]:
    """What bash completes for ``words`` (the last one being typed), as the script asks."""
    env = {**os.environ, "_P2PHOST_COMPLETE": "complete_bash", "COMP_WORDS": words,
           "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1))}
    done = subprocess.run([sys.executable, "-m", "p2phost"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_bash_completes_commands_plugin_names_and_peer_addresses(tmp_path: Path) -> None:
    (tmp_path / "p2phost.toml").write_text(
        '[node]\nlisten = ["tcp://127.0.0.1:7400"]\n'
        '[plugins]\necho = "*"\nchat = "*"\nstatic-discovery = "*"\n'
        '[config.static-discovery]\npeers = ["tcp://10.0.0.7:7401"]\n')
    (tmp_path / ".p2phost").mkdir()
    peer = "12D3KooWLRPJAA5o6Gh5qRr8JvR43KtBtHfMrwCpwmoqxsnM8uU7"
    (tmp_path / ".p2phost" / "known_peers").write_text(f"# header\n{peer} bob 2026 tofu\n")
    assert _complete(tmp_path, "p2phost pl") == ["plugin"]
    assert _complete(tmp_path, "p2phost plugin remove e") == ["echo"]
    assert sorted(_complete(tmp_path, "p2phost plugin upgrade ")) == \
        ["chat", "echo", "static-discovery"]
    assert _complete(tmp_path, "p2phost ping tcp://10") == ["tcp://10.0.0.7:7401"]
    assert _complete(tmp_path, "p2phost send 12D") == [peer]
    # Outside a project, or with a broken manifest, TAB completes nothing and says nothing.
    (tmp_path / "p2phost.toml").write_text("[plugins\n")
    assert _complete(tmp_path, "p2phost plugin remove ") == []


def _bash_completes(cwd: Path, line: str, *words: str) -> list[str]:
    """What the sourced ``p2phost completion bash`` script puts in COMPREPLY for ``line``,
    given ``words`` as bash splits it (at blanks and at ':', COMP_WORDBREAKS)."""
    script = run_cli("completion", "bash", check=True).stdout
    quoted = " ".join("'" + w + "'" for w in words)
    driver = (f"{script}\ncomplete -p p2phost >/dev/null || exit 3\n"
              f"COMP_LINE='{line}'; COMP_POINT=${{#COMP_LINE}}; COMP_WORDS=({quoted});"
              "COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ));"
              "_p2phost_completion p2phost; printf '%s\\n' \"${COMPREPLY[@]}\"")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    done = subprocess.run(["bash", "--norc", "--noprofile", "-c", driver], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return [w for w in done.stdout.split("\n") if w]


def test_bash_completes_an_address_begun_with_its_colons(tmp_path: Path) -> None:
    (tmp_path / "p2phost.toml").write_text(
        '[node]\nlisten = ["tcp://127.0.0.1:7400"]\n[plugins]\nstatic-discovery = "*"\n'
        '[config.static-discovery]\npeers = ["tcp://127.0.0.1:7401"]\n')
    both = ["tcp://127.0.0.1:7400", "tcp://127.0.0.1:7401"]
    assert sorted(_bash_completes(tmp_path, "p2phost ping ", "p2phost", "ping", "")) == both
    # Bash took "tcp://127.0.0.1:" as earlier words: it gets back only what replaces "74".
    assert _bash_completes(tmp_path, "p2phost ping tcp://127.0.0.1:74", "p2phost", "ping",
                           "tcp", ":", "//127.0.0.1", ":", "74") == ["7401", "7400"]
    assert _bash_completes(tmp_path, "p2phost ping tcp:", "p2phost", "ping", "tcp",
                           ":") == ["://127.0.0.1:7401", "://127.0.0.1:7400"]
    assert _bash_completes(tmp_path, "p2phost plugin remove s", "p2phost", "plugin",
                           "remove", "s") == ["static-discovery"]


def test_every_command_module_is_registered() -> None:
    """A new ``_cli/NAME.py`` with ``register(app)`` is reachable only through COMMANDS."""
    import p2phost._cli as package
    from p2phost._cli._app import COMMANDS

    wired = {m for modules, _ in COMMANDS.values() for m in modules}
    found = {p.stem for p in Path(package.__file__).parent.glob("*.py")
             if not p.stem.startswith("_") and "\ndef register(" in p.read_text()}
    assert found - wired == set(), f"add these to COMMANDS in _cli/_app.py: {found - wired}"


@pytest.mark.parametrize("columns", ["60", "80", "200"])
def test_the_fast_help_is_what_typer_prints(columns: str) -> None:
    env = {**os.environ, "COLUMNS": columns}
    fast = subprocess.run([sys.executable, "-m", "p2phost", "--help"], env=env,
                          capture_output=True, text=True, timeout=60, check=True).stdout
    typer_help = subprocess.run(
        [sys.executable, "-c", "from p2phost._cli._app import app\n"
                               "app(['--help'], prog_name='p2phost')"],
        env=env, capture_output=True, text=True, timeout=60, check=False).stdout
    assert fast == typer_help
    assert fast == run_cli("-h", env={"COLUMNS": columns}).stdout
