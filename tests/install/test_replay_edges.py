"""Where a replay of ``plugin install --yes`` (``p2phost._replay``) could part from the full
installer: an answer a 304 says not to keep, and an install interrupted by the user."""

from __future__ import annotations

import _thread
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import Workspace
from .test_replay import frozen, install, ok  # noqa: F401 - a fixture
from .test_response_cache import Proxy, proxy_to  # noqa: F401 - a fixture

Projects = tuple[Proxy, Callable[..., Workspace]]


def test_a_304_saying_no_store_twice_over_is_not_replayed(frozen: Projects) -> None:  # noqa: F811
    """``Cache-Control`` given twice is one list (RFC 9110 5.3): ``no-store`` in either
    line forbids keeping the answer, as the full installer reads it."""
    proxy, make = frozen
    proxy.max_age = 600
    first = make("first", plugins={"alpha": "*"})
    assert ok(first)
    proxy.head_304 = [("Cache-Control", "no-store")]  # before the max-age=600 line
    second = make("second", first.manifest)
    done = second.cli(
        "plugin", "install", "--yes", "--refresh", env={"PYTHONPROFILEIMPORTTIME": "1"}
    )
    assert done.returncode == 0, done.stderr
    assert "p2phost._install._installer" in done.stderr  # the full installer decided
    assert second.installed() == {"alpha": "1.1.0"}


#: The network timeout of an interrupted install: Ctrl-C must end it well before that.
_TIMEOUT = 20.0


def _ctrl_c_reaches_python() -> None:
    """In the child before exec: Ctrl-C's default action, which Python turns into
    KeyboardInterrupt. A test run started in the background of a shell has SIGINT
    ignored, and a child inherits that (Python then leaves it ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupted(ws: Workspace, proxy: Proxy, env: dict[str, str]) -> tuple[int, str, str]:
    """``plugin install --yes --refresh`` in ``ws``, Ctrl-C'd while the registry holds its
    answer: its exit code, stdout and stderr. It must exit at once, not when a wait for
    the registry times out."""
    proxy.hold, proxy.asked = threading.Event(), threading.Event()
    process = subprocess.Popen(
        [sys.executable, "-m", "p2phost", "plugin", "install", "--yes", "--refresh"],
        cwd=ws.root,
        env={
            **os.environ,
            "P2PHOST_CACHE_DIR": str(ws.cache),
            "P2PHOST_REGISTRY": ws.registry,
            "P2PHOST_TIMEOUT": str(_TIMEOUT),
            **env,
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_ctrl_c_reaches_python,
    )
    try:
        assert proxy.asked.wait(30)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=_TIMEOUT / 2)
    finally:
        proxy.hold.set()
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, out, err


def test_ctrl_c_during_a_replay_ends_as_in_the_full_installer(frozen: Projects) -> None:  # noqa: F811
    proxy, make = frozen
    proxy.max_age = 600
    first = make("first", plugins={"alpha": "*"})
    assert ok(first)
    full = _interrupted(make("full", first.manifest), proxy, {"P2PHOST_REPLAY": "0"})
    replayed = _interrupted(make("replayed", first.manifest), proxy, {})
    assert full == (1, "", "\nAborted!\n")
    assert replayed == full


def _unanswered() -> tuple[str, threading.Event, socket.socket]:
    """A server that reads one request and never answers: its URL, an event set once
    the request was read, and its socket."""
    server = socket.create_server(("127.0.0.1", 0))
    asked = threading.Event()

    def serve() -> None:
        connection, _ = server.accept()
        with connection:
            connection.recv(65536)
            asked.set()
            connection.recv(1)  # until the client hangs up

    threading.Thread(target=serve, daemon=True).start()
    return f"http://127.0.0.1:{server.getsockname()[1]}/api/v1/plugins/alpha", asked, server


# pytest-timeout's default method holds SIGALRM, which the installer then leaves alone.
@pytest.mark.timeout(120, method="thread")
@pytest.mark.parametrize("path", ["full", "replay"])
def test_a_ctrl_c_landing_just_before_the_wait_for_the_registry_ends_it_at_once(
    path: str,
) -> None:
    """A Ctrl-C that lands after Python last looked for signals and before a socket wait
    begins does not interrupt that wait: it used to be acted on only when the wait timed
    out (10 s, each attempt). ``_thread.interrupt_main`` leaves that very state (the
    signal noted, the wait not interrupted), here while the installer (``_http``) or the
    replay's revalidation (``_revalidate``) waits for an answer that never comes."""
    from p2phost._install._http import Fetcher
    from p2phost._revalidate import _ask

    url, asked, server = _unanswered()
    with server:
        def interrupt() -> None:
            if asked.wait(10):
                time.sleep(0.3)  # the main thread waits for the answer by now
                _thread.interrupt_main()

        # Python's Ctrl-C handler, whatever this run inherited (see _ctrl_c_reaches_python):
        # interrupt_main does nothing while SIGINT is ignored.
        inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            threading.Thread(target=interrupt, daemon=True).start()
            start = time.monotonic()
            with pytest.raises(KeyboardInterrupt):
                if path == "full":
                    Fetcher(timeout=_TIMEOUT, attempts=1).json(url)
                else:
                    _ask(url, "application/json", '"x"', _TIMEOUT)
            assert time.monotonic() - start < _TIMEOUT / 2
        finally:
            signal.signal(signal.SIGINT, inherited)


def test_forced_colour_prints_what_the_full_installer_prints(frozen: Projects) -> None:  # noqa: F811
    """With ``FORCE_COLOR`` (or ``TTY_COMPATIBLE``) rich treats a pipe as a terminal, and
    the full installer's progress bar writes control codes there: no replay prints them."""
    proxy, make = frozen
    proxy.max_age = 600
    first = make("first", plugins={"alpha": "*"})
    assert ok(first)
    for forcing in ("FORCE_COLOR", "TTY_COMPATIBLE"):
        colour = {forcing: "1"}
        reference = make(f"reference-{forcing}", first.manifest)
        full, ran_full = install(reference, env={**colour, "P2PHOST_REPLAY": "0"})
        assert ran_full and full.returncode == 0
        second = make(f"second-{forcing}", first.manifest)
        done, _ = install(second, env=colour)
        assert (done.returncode, done.stdout, done.stderr) == (0, full.stdout, full.stderr)


def test_a_record_others_may_write_is_not_replayed(frozen: Projects) -> None:  # noqa: F811
    """A record is the replay's whole decision: one that another user could have written
    (in a shared cache, say) is not trusted, and the full installer decides."""
    proxy, make = frozen
    proxy.max_age = 600
    first = make("first", plugins={"alpha": "*"})
    assert ok(first)
    (record,) = (first.cache / "replay").glob("build-*")
    record.chmod(0o666)
    second = make("second", first.manifest)
    assert ok(second)  # the full installer, which keeps a record of its own
    assert not record.stat().st_mode & 0o022
    assert not ok(make("third", first.manifest))


def test_two_hosts_sharing_a_cache_keep_a_record_each(
    frozen: Projects,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Two interpreters or venvs (a CI matrix, tox) sharing one download cache: each
    host's record stands beside the other's instead of replacing it."""
    proxy, make = frozen
    proxy.max_age = 600
    other = {"PYTHONPATH": str(tmp_path / "elsewhere")}  # another sys.path: another host
    (tmp_path / "elsewhere").mkdir()
    first = make("first", plugins={"alpha": "*"})
    assert ok(first)
    assert ok(make("other", first.manifest), env=other)  # its own full install
    assert not ok(make("second", first.manifest))  # the first host's record still stands
    assert not ok(make("other-again", first.manifest), env=other)
