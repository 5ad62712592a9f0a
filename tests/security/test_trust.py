"""The peer trust policy: [trust] in p2phost.toml, .p2phost/known_peers, `p2phost trust`."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path

import pytest

from p2phost._manifest import Manifest
from p2phost._trust import KNOWN_PEERS, KnownPeers, TrustPolicy, TrustSettings
from p2phost_sdk import Backoff, Identity, PeerUnavailable
from tests.conftest import run_cli, write_project
from tests.runtime.processes import RunningNode

from .conftest import Counter, MakeNode, eventually

FRIEND, STRANGER = Identity.generate(), Identity.generate()


def test_the_manifest_reads_trust_and_names_each_bad_key(tmp_path: Path) -> None:
    path = tmp_path / "p2phost.toml"
    path.write_text(f'[node]\nname = "a"\n\n[trust]\npolicy = "tofu"\n'
                    f'peers = ["{FRIEND.peer_id}"]\nreplay-window = 30\n')
    assert Manifest.load(path).trust == TrustSettings("tofu", (FRIEND.peer_id,), 30.0)
    path.write_text('[trust]\npolicy = "maybe"\npeers = ["nope"]\nreplay-window = -1\nx = 1\n')
    _, problems = Manifest.check(path)
    assert [str(p).split(" (fix")[0] for p in problems] == [
        "p2phost.toml:2: trust.policy: unknown policy 'maybe'",
        "p2phost.toml:3: trust.peers: 'nope' is not a peer id",
        "p2phost.toml:4: trust.replay-window: expected a number of seconds > 0, got -1",
        "p2phost.toml:5: trust.x: unknown key (known: policy, peers, replay-window)",
    ]


def test_an_allowlist_accepts_listed_and_added_peers_only(tmp_path: Path) -> None:
    known = KnownPeers(tmp_path / KNOWN_PEERS)
    policy = TrustPolicy(TrustSettings("allowlist", (FRIEND.peer_id,)), known)
    assert policy.check(FRIEND.peer_id, None) is None
    refusal = policy.check(STRANGER.peer_id, "stranger")
    assert refusal is not None and f"p2phost trust add {STRANGER.peer_id}" in refusal
    known.add(STRANGER.peer_id, "stranger")  # as `p2phost trust add` does, while running
    assert policy.check(STRANGER.peer_id, None) is None
    assert [p.peer_id for p in known.remove("stranger")] == [STRANGER.peer_id]
    assert policy.check(STRANGER.peer_id, None) is not None


def test_tofu_learns_new_peers_and_refuses_another_key_under_a_known_name(
        tmp_path: Path) -> None:
    known = KnownPeers(tmp_path / KNOWN_PEERS)
    policy = TrustPolicy(TrustSettings("tofu"), known)
    assert policy.check(FRIEND.peer_id, None) is None  # undecided until its hello
    assert policy.check(FRIEND.peer_id, "my friend") is None
    assert [(p.peer_id, p.name, p.how) for p in known.peers()] == [
        (FRIEND.peer_id, "myfriend", "tofu")]
    impostor = Identity.generate()
    refusal = policy.check(impostor.peer_id, "my friend")
    assert refusal is not None
    assert f"'myfriend' is known as {FRIEND.peer_id}" in refusal
    assert "p2phost trust remove myfriend" in refusal
    assert policy.check(FRIEND.peer_id, "my friend") is None
    known.remove("myfriend")  # the key changed on purpose
    assert policy.check(impostor.peer_id, "my friend") is None


async def test_a_peer_outside_the_allowlist_is_refused_at_the_handshake(
        make_node: MakeNode, security: str, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    policy = TrustPolicy(TrustSettings("allowlist", (FRIEND.peer_id,)),
                         KnownPeers(tmp_path / KNOWN_PEERS))
    server = await make_node(security, [Counter()], admit=policy.check)
    friend = await make_node(security, identity=FRIEND, listen=False)
    stranger = await make_node(security, identity=STRANGER, listen=False)
    address = server.addresses[0]
    assert await friend.request(address, "echo", 1) == 1
    with pytest.raises(PeerUnavailable, match="the peer refused the connection: peer "
                       f"{STRANGER.peer_id} is refused by the trust policy: not in the "
                       "allowlist"):
        await stranger.connect(address)
    assert "closed connection from tcp://127.0.0.1:" in caplog.text
    assert f"peer {STRANGER.peer_id} is refused by the trust policy" in caplog.text
    assert [p.peer_id for p in server.peers()] == [FRIEND.peer_id]
    # The policy works both ways: a node does not dial out to a peer it does not trust.
    picky = await make_node(security, listen=False, admit=policy.check)
    with pytest.raises(PeerUnavailable, match="refused by the trust policy"):
        await picky.connect(stranger_address := (await make_node(security)).addresses[0])
    assert stranger_address not in [p.address for p in picky.peers()]


def _project(root: Path, wheels: dict[str, Path], trust: str = "") -> Path:
    plugins = ["tcp-transport", "json-codec", "echo", "noise-security"]
    write_project(root, plugins, name=root.name, wheels=[wheels[p] for p in plugins])
    if trust:
        with (root / "p2phost.toml").open("a") as manifest:
            manifest.write(f"\n[trust]\n{trust}\n")
    return root


def test_trust_commands_drive_a_running_allowlisted_node(
        tmp_path: Path, official_wheels: dict[str, Path]) -> None:
    server = _project(tmp_path / "server", official_wheels, 'policy = "allowlist"')
    client = _project(tmp_path / "client", official_wheels)
    client_id = run_cli("id", cwd=client, check=True).stdout.strip()
    node = RunningNode(server)
    try:
        refused = run_cli("ping", node.address, "-c", "1", cwd=client)
        assert refused.returncode == 1, refused
        assert "refused by the trust policy: not in the allowlist" in refused.stderr
        assert "Traceback" not in refused.stderr

        added = run_cli("trust", "add", client_id, "--name", "client", cwd=server)
        assert added.returncode == 0 and f"trusting {client_id} (client)" in added.stdout
        # The running node reads known_peers again: no restart needed.
        done = run_cli("ping", node.address, "-c", "1", cwd=client)
        assert done.returncode == 0 and "1 sent, 1 replies" in done.stdout, done

        listed = json.loads(run_cli("trust", "list", "--json", cwd=server, check=True).stdout)
        assert listed["policy"] == "allowlist"
        assert [(p["peer_id"], p["name"], p["source"]) for p in listed["peers"]] == [
            (client_id, "client", "known_peers (added)")]
        assert run_cli("trust", "remove", "client", cwd=server).returncode == 0
        assert run_cli("ping", node.address, "-c", "1", cwd=client).returncode == 1

        bad = run_cli("trust", "add", "not-a-peer-id", cwd=server)
        assert bad.returncode == 2 and "is not a peer id" in bad.stderr, bad
        missing = run_cli("trust", "remove", "nobody", cwd=server)
        assert missing.returncode == 2 and "fix: p2phost trust list" in missing.stderr
    finally:
        assert node.stop() == 0
    assert f"peer {client_id} is refused by the trust policy" in node.stderr


def test_the_manifest_allowlist_and_trust_remove_keep_its_comments(
        tmp_path: Path, official_wheels: dict[str, Path]) -> None:
    server = _project(tmp_path / "server", official_wheels,
                      f'policy = "allowlist"  # who may connect\npeers = ["{FRIEND.peer_id}"]')
    note = run_cli("trust", "add", FRIEND.peer_id, cwd=server, check=True).stdout
    assert "trusted already" in note
    run_cli("trust", "remove", FRIEND.peer_id, cwd=server, check=True)
    text = (server / "p2phost.toml").read_text()
    assert "# who may connect" in text and FRIEND.peer_id not in text
    assert Manifest.load(server / "p2phost.toml").trust.peers == ()


def test_a_client_with_its_projects_identity_is_kept_apart_from_its_running_node(
        tmp_path: Path, official_wheels: dict[str, Path]) -> None:
    """`p2phost send/ping` speak as the project (an allowlist admits them), and neither
    the node they reach nor the project's own node confuses them with the running node."""
    bob_root = _project(tmp_path / "bob", official_wheels, 'policy = "tofu"')
    bob = RunningNode(bob_root)
    alice_root = _project(tmp_path / "alice", official_wheels)
    alice_id = run_cli("id", cwd=alice_root, check=True).stdout.strip()
    run_cli("trust", "add", bob.peer_id, cwd=alice_root, check=True)
    text = (alice_root / "p2phost.toml").read_text().replace(
        "[node]", f'[node]\nconnect = ["{bob.address}"]', 1)
    (alice_root / "p2phost.toml").write_text(text + '\n[trust]\npolicy = "allowlist"\n')
    alice = RunningNode(alice_root)
    try:
        deadline = time.monotonic() + 20
        while f"connected to {alice_id}" not in bob.stderr:
            assert time.monotonic() < deadline, bob.stderr
            time.sleep(0.05)
        # A client of alice's project reaches bob, and alice's own node.
        reply = run_cli("send", bob.address, "echo", '{"x": 1}', "--request", cwd=alice_root)
        assert (reply.returncode, reply.stdout.strip()) == (0, '{"x": 1}'), reply
        pinged = run_cli("ping", alice.address, "-c", "2", "-i", "0", cwd=alice_root)
        assert pinged.returncode == 0 and "2 sent, 2 replies" in pinged.stdout, pinged
        peers = json.loads(run_cli("peers", "--json", cwd=bob_root, check=True).stdout)
        assert [p["peer_id"] for p in peers["peers"]] == [alice_id]
        assert json.loads(run_cli("peers", "--json", cwd=alice_root, check=True).stdout)[
            "peers"][0]["peer_id"] == bob.peer_id
    finally:
        assert alice.stop() == 0
        assert bob.stop() == 0
    for log in (alice.stderr, bob.stderr):
        assert "retiring" not in log and "restarted" not in log, log
        assert log.count("connected to") - log.count("disconnected from") <= 1, log
    # bob (tofu) learnt alice once, under her name.
    assert (bob_root / ".p2phost" / KNOWN_PEERS).read_text().count(alice_id) == 1


@pytest.mark.parametrize("plugin", ["noise", None])
@pytest.mark.parametrize("refuser", ["listener", "dialler"])
async def test_a_name_known_under_another_key_is_a_refused_dial_with_backoff(
        make_node: MakeNode, plugin: str | None, refuser: str, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """Under tofu a node refuses a known name with another key once it has the peer's
    hello. Either way round, the dialler sees a refused dial (counted, logged once, backed
    off), not a connection that comes up and goes again ten times a second, and the
    listener's log of it is rate-limited, not two lines per attempt."""
    known = KnownPeers(tmp_path / KNOWN_PEERS)
    known.add(FRIEND.peer_id, "alice", how="tofu")
    tofu = TrustPolicy(TrustSettings("tofu"), known).check
    # The listener calls itself alice when the dialler refuses it, and the other way round.
    names = ("bob", "alice") if refuser == "listener" else ("alice", "bob")
    listener = await make_node(plugin, [Counter()], name=names[0],
                               admit=tofu if refuser == "listener" else None)
    caplog.set_level(logging.INFO, "p2phost")
    dialler = await make_node(plugin, listen=False, name=names[1],
                              admit=tofu if refuser == "dialler" else None,
                              connect=[listener.addresses[0]], reconnect=Backoff(0.5, 10.0))
    await asyncio.sleep(3.0)
    dials = dialler.discovery_status()["dialling"]["dials"]
    # Backoff 0.5 s doubling (waits 0.25-0.5, 0.5-1, 1-2 s): 3-4 dials in 3 s, not ~10.
    assert 2 <= dials <= 5, dials
    # (a dial in flight at 3 s ends well before the next one may start, at 3.75 s)
    await eventually(lambda: listener.stats()["connections"]["failed_handshakes"] >= dials
                     and dialler.discovery_status()["dialling"]["refused"] >= dials, 0.7)
    dialling = dialler.discovery_status()["dialling"]
    assert (dialling["refused"], dialling["connected"]) == (dials, 0), dialling
    assert "'alice' is known as " + FRIEND.peer_id in dialling["refused_reason"]
    assert f"connected to {listener.peer_id}" not in caplog.text
    assert caplog.text.count("cannot connect to") == 1  # once, as the refusal is new
    assert not listener.peers()
    assert listener.stats()["connections"]["failed_handshakes"] == dials
    # The listener: one "connected" line at most (it learns of the refusal after it), and
    # the refusals through its rate-limited log of failed handshakes.
    assert caplog.text.count(f"connected to {dialler.peer_id}") <= 1
    assert f"disconnected from {dialler.peer_id}" not in caplog.text
