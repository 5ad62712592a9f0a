"""A malformed address (tcp or relay) is a usage error, wherever it is written: on the
command line of ``send`` and ``ping``, in ``[node] listen`` or in static discovery's peers.
It exits 2 with what is wrong and a ``fix:`` line naming the form to write, never 1 (a
peer that did not answer) and never a traceback."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import tomlkit

from p2phost._address_form import check_form
from p2phost_sdk import AddressError, parse_host_port
from tests.conftest import RunningRegistry, run_cli

from .conftest import cli_env, new_project

PEER = "7zs5tg7pckxe2jtznjw3wveeucjuy4vpxh5xtugboim5ybyn7epq"

#: address -> what the error says about it.
MALFORMED = {
    "tcp://nohost:": "expected tcp://HOST:PORT",
    "tcp://[::1": "expected tcp://HOST:PORT",
    "tcp://127.0.0.1:99999": "the port is not 0-65535",
    "relay+tcp://": "the relay's own address must be",
    "relay+tcp://127.0.0.1:1/p2p-circuit": "names no peer",
    "relay+tcp://127.0.0.1:1/p2p-circuit/nobody": "is not a peer id",
    f"relay+tcp://nohost:/p2p-circuit/{PEER}": "expected tcp://HOST:PORT",
}


def _usage_error(done: subprocess.CompletedProcess[str], says: str) -> None:
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert "bad address" in done.stderr and says in done.stderr, done.stderr
    assert "\nfix: " in done.stderr and "write the address as" in done.stderr, done.stderr


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory,
            official_registry: RunningRegistry) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("bad-addresses")
    return (new_project(root / "alice", official_registry, "relay"),
            cli_env(official_registry, root / "cache"))


@pytest.mark.parametrize("address", list(MALFORMED))
def test_send_to_a_malformed_address_is_a_usage_error(
        project: tuple[Path, dict[str, str]], address: str) -> None:
    root, env = project
    _usage_error(run_cli("send", address, "echo", "{}", cwd=root, env=env), MALFORMED[address])


def test_ping_a_malformed_address_is_a_usage_error(
        project: tuple[Path, dict[str, str]]) -> None:
    root, env = project
    _usage_error(run_cli("ping", "tcp://nohost:", cwd=root, env=env), "tcp://HOST:PORT")


@pytest.mark.parametrize(("table", "key", "address"), [
    ("node", "listen", "tcp://nohost:"),
    ("node", "listen", "relay+tcp://"),
    ("node", "connect", "tcp://[::1"),
    ("config.static-discovery", "peers", "tcp://[::1"),
    ("config.static-discovery", "peers", "relay+tcp://127.0.0.1:1/p2p-circuit/nobody"),
])
def test_run_refuses_a_malformed_address_in_the_manifest(
        tmp_path: Path, project: tuple[Path, dict[str, str]],
        table: str, key: str, address: str) -> None:
    root, env = project
    manifest = root / "p2phost.toml"
    kept = manifest.read_text()
    doc = tomlkit.parse(kept)
    section = doc
    for part in table.split("."):
        section = section.setdefault(part, tomlkit.table())  # type: ignore[assignment]
    section[key] = [address]
    manifest.write_text(tomlkit.dumps(doc))
    try:
        done = run_cli("run", cwd=root, env=env, timeout=30)
    finally:
        manifest.write_text(kept)
    _usage_error(done, MALFORMED.get(address, "bad address"))
    where = f"[{table}] {key}"
    assert f"{where}: bad address" in done.stderr, done.stderr
    assert f"in {where} of p2phost.toml" in done.stderr, done.stderr


#: a scheme separator short of a slash, or whitespace -> what the error says about it.
MISWRITTEN = {"tcp:/x": "`scheme://` expected", "redis:/bad": "`scheme://` expected",
              "nats:/h:4222": "`scheme://` expected",
              "tcp://127.0.0.1:17400 ": "whitespace"}


def _fixed_address(stderr: str) -> str:
    """The address the ``fix:`` line says to write (a peer id in place of PEERID)."""
    return stderr.split("write the address as ", 1)[1].split()[0].replace("PEERID", PEER)


@pytest.mark.parametrize("address", list(MISWRITTEN))
def test_send_to_a_miswritten_address_says_so_and_its_fix_passes(
        project: tuple[Path, dict[str, str]], address: str) -> None:
    root, env = project
    done = run_cli("send", address, "echo", "{}", cwd=root, env=env)
    _usage_error(done, MISWRITTEN[address])
    assert "no transport plugin serves" not in done.stderr, done.stderr
    fixed = _fixed_address(done.stderr)
    assert fixed.split("://")[0] == address.split(":/")[0], fixed
    if fixed.startswith("nats"):
        assert fixed.endswith(f"#{PEER}"), fixed  # a letter to a broker names its peer
    check_form(fixed, peer=True)


def test_run_check_fixes_a_miswritten_listen_with_its_own_scheme(
        project: tuple[Path, dict[str, str]]) -> None:
    root, env = project
    manifest = root / "p2phost.toml"
    kept = manifest.read_text()
    doc = tomlkit.parse(kept)
    doc["node"]["listen"] = ["redis:/bad"]  # type: ignore[index]
    manifest.write_text(tomlkit.dumps(doc))
    try:
        done = run_cli("run", "--check", cwd=root, env=env)
    finally:
        manifest.write_text(kept)
    _usage_error(done, "`scheme://` expected")
    fixed = _fixed_address(done.stderr)
    assert fixed.startswith("redis://"), done.stderr
    check_form(fixed)


@pytest.mark.parametrize("address", ["tcp:/x", "redis:/bad", "nats:/h:4222", "h:1", "x",
                                     "tcp://h", "tcp://[::1", "redis://h/abc", " tcp://h:1",
                                     "tcp://h:99999", f"nats:/h#{PEER}", "amqp:/u:p@h/",
                                     "mem:/bob", f"tcp://h:1#{PEER}", f"ws://h:1/p#{PEER}",
                                     "ws://u@h:1"])
def test_every_suggested_address_passes_the_check(address: str) -> None:
    for peer in (False, True):
        with pytest.raises(AddressError) as caught:
            check_form(address, peer=peer)
        check_form(caught.value.expected.replace("PEERID", PEER), peer=peer)


@pytest.mark.parametrize("scheme", ["tcp", "quic"])
def test_a_peer_id_after_a_socket_address_is_refused_as_its_transport_refuses_it(
        scheme: str) -> None:
    # init and doctor check the form: they passed tcp://HOST:PORT#PEERID, which the
    # transport (the SDK's parse_host_port) then refused at the start.
    address = f"{scheme}://127.0.0.1:7400#{PEER}"
    for check in (check_form, lambda a: parse_host_port(a, scheme=scheme)):
        with pytest.raises(AddressError) as caught:
            check(address)
        assert "(no path, query or fragment)" in caught.value.problem, caught.value
    with pytest.raises(AddressError) as caught:
        check_form(address, peer=True)
    assert caught.value.expected == f"{scheme}://127.0.0.1:7400"  # the fix drops it
    check_form(caught.value.expected, peer=True)


@pytest.mark.parametrize("address", [f"ws://127.0.0.1:7400#{PEER}", "ws://u@127.0.0.1:7400",
                                     "tcp://127.0.0.1:7400#x", "ws://127.0.0.1:7400/p#x"])
def test_a_socket_address_with_a_fragment_or_user_is_refused_as_its_transport_refuses_it(
        address: str) -> None:
    # websocket-transport refuses a fragment and a user (as tcp and quic do a fragment):
    # init and doctor passed ws://HOST:PORT#PEERID, and said a fragment of tcp's "is not a
    # peer id", as if one would do.
    with pytest.raises(AddressError) as caught:
        check_form(address)
    assert "peer id" not in caught.value.problem, caught.value
    assert "#" not in caught.value.expected and "@" not in caught.value.expected
