"""The async API: open_node, handlers in-process, send/request/publish, close, bad input."""

from __future__ import annotations

import asyncio
import dataclasses
import math
from pathlib import Path

import pytest
import tomlkit

import p2phost
from p2phost import Message
from p2phost._keys import create_key, public_key_of, sign_file
from p2phost._lock import Lock, LockedFile
from p2phost_sdk import App, Identity, RemoteError, handler
from tests.conftest import OFFICIAL, build_wheels, run_cli
from tests.library.conftest import StateDir, manifest, mem_address


@dataclasses.dataclass
class Note:
    text: str


class Counter(App):
    name = "counter"

    def __init__(self) -> None:
        self.seen: list[object] = []

    @handler("count")
    async def count(self, message: Message) -> int:
        self.seen.append(message.body)
        return len(self.seen)


async def test_two_nodes_in_one_process_send_request_and_publish(state_dir: StateDir) -> None:
    got: asyncio.Queue[object] = asyncio.Queue(10)
    server = p2phost.open_node(manifest=manifest([mem_address()], name="server"),
                               state_dir=state_dir("server"))

    @server.handler("echo")
    async def echo(message: Message) -> object:
        return {"echo": message.body}

    @server.handler("note")
    def note(message: Message) -> None:  # a plain function runs in a worker thread
        got.put_nowait(message.body)

    app = server.add_app(Counter())
    async with server, p2phost.open_node(manifest=manifest(name="client"),
                                         state_dir=state_dir("client")) as client:
        assert server.topics == ["count", "echo", "note"]
        peer = await client.connect(server.addresses[0])
        assert peer == server.peer_id
        assert await client.request(peer, "echo", {"x": 1}) == {"echo": {"x": 1}}
        await client.send(peer, "note", "hello")
        assert await asyncio.wait_for(got.get(), 5) == "hello"
        assert await client.publish("count", 7) == 1
        assert await client.request(peer, "count", 8) == 2
        assert isinstance(app, Counter) and app.seen == [7, 8]
        assert [p.peer_id for p in client.peers()] == [server.peer_id]
        with pytest.raises(RemoteError, match="no app on this node handles"):
            await client.request(peer, "nothing", {})
        assert await client.disconnect(peer, reason="done")
        assert client.peers() == [] and not await client.disconnect(peer)
        assert await client.request(server.addresses[0], "count", 9) == 3  # dials again
    with pytest.raises(p2phost.NodeClosed):
        await client.request(peer, "echo", {})
    with pytest.raises(p2phost.NodeClosed):
        _ = server.addresses


async def test_an_async_handler_runs_as_written_with_no_wrapper_and_stays_unmarked(
        state_dir: StateDir) -> None:
    """A coroutine function is registered as a copy of itself (its code, defaults and
    closure): no coroutine around it per message, and the caller's function unmarked."""
    server = p2phost.open_node(manifest=manifest([mem_address()], name="server"),
                               state_dir=state_dir("server"))
    suffix = "!"

    async def shout(message: Message, loud: bool = True, *, times: int = 2) -> object:
        return str(message.body) * times + (suffix if loud else "")

    assert server.handler("shout")(shout) is shout
    registered = server._handlers.handlers()["shout"]
    assert registered is not shout and registered.__code__ is shout.__code__
    assert not hasattr(shout, "__p2phost_topic__")
    assert registered.__p2phost_topic__ == "shout"  # type: ignore[attr-defined]
    async with server, p2phost.open_node(manifest=manifest(name="client"),
                                         state_dir=state_dir("client")) as client:
        peer = await client.connect(server.addresses[0])
        assert await client.request(peer, "shout", "hey") == "heyhey!"


async def test_close_drains_the_mailbox_like_run(state_dir: StateDir) -> None:
    handled: list[int] = []
    server = p2phost.open_node(manifest=manifest([mem_address()]), state_dir=state_dir("s"))

    @server.handler("slow")
    async def slow(message: Message) -> None:
        await asyncio.sleep(0.01)
        handled.append(message.body)

    async with p2phost.open_node(manifest=manifest(), state_dir=state_dir("c")) as client:
        await server.open()
        peer = await client.connect(server.addresses[0])
        for i in range(20):
            await client.send(peer, "slow", i)
        await client.request(peer, "slow", 20)  # everything before it is in the mailbox
        await server.close()
    assert handled == list(range(21))


async def test_one_identity_opens_once_per_process(state_dir: StateDir) -> None:
    root = state_dir("same")
    async with p2phost.open_node(manifest=manifest(), state_dir=root, control=False) as first:
        second = p2phost.open_node(manifest=manifest(), state_dir=root, control=False)
        with pytest.raises(p2phost.IdentityInUse, match=first.peer_id):
            await second.open()
    # Closed: the identity may open again.
    async with p2phost.open_node(manifest=manifest(), state_dir=root) as again:
        assert again.peer_id == first.peer_id


def test_a_manifest_mapping_never_overwrites_a_projects_own_manifest(
        tmp_path: Path) -> None:
    own = "# my project, hand-written\n[node]\nname = \"mine\"\n"
    (tmp_path / "p2phost.toml").write_text(own, encoding="utf-8")
    with pytest.raises(p2phost.UserError, match="did not write it") as exc:
        p2phost.open_node(manifest=manifest(), state_dir=tmp_path)
    assert (tmp_path / "p2phost.toml").read_text(encoding="utf-8") == own
    assert f"open_node({str(tmp_path)!r}) without manifest=" in str(exc.value.fix)
    # The file it wrote itself it rewrites from the mapping, as every open does.
    p2phost.open_node(manifest=manifest(), state_dir=tmp_path / "mine")
    p2phost.open_node(manifest=manifest(name="again"), state_dir=tmp_path / "mine")
    assert 'name = "again"' in (tmp_path / "mine" / "p2phost.toml").read_text()


async def test_missing_plugins_fail_as_run_does(tmp_path: Path) -> None:
    project = tmp_path / "p"
    project.mkdir()
    (project / "p2phost.toml").write_text(tomlkit.dumps(
        manifest(plugins=["no-such-transport", "json-codec"])))
    with pytest.raises(p2phost.UserError) as exc:
        await p2phost.open_node(project).open()
    run = await asyncio.to_thread(run_cli, "run", cwd=project)
    assert run.returncode != 0
    assert f"error: {exc.value.message}" in run.stderr and f"fix: {exc.value.fix}" in run.stderr
    assert exc.value.fix == "p2phost plugin install no-such-transport"
    # Without a project, the fix says where the plugin may come from too.
    # A command to paste: the state directory's path with a space is one argument.
    node = p2phost.open_node(manifest=manifest(plugins=["no-such-transport"]),
                             state_dir=tmp_path / "my node")
    with pytest.raises(p2phost.UserError, match="is not installed") as exc:
        await node.open()
    assert f"cd '{tmp_path / 'my node'}' && p2phost plugin install --yes" in str(exc.value.fix)
    assert "pip install p2phost-" not in str(exc.value.fix)
    assert "NAME" not in str(exc.value.fix)


async def _missing_fix(root: Path, plugin: str) -> str:
    node = p2phost.open_node(manifest=manifest(plugins=[plugin]), state_dir=root)
    with pytest.raises(p2phost.UserError, match="is not installed") as exc:
        await node.open()
    return str(exc.value.fix)


async def test_a_programs_missing_plugin_fix_names_where_that_plugin_comes_from(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A built-in source as a wheel install of p2phost has: the official plugins' wheels,
    # signed with the release key.
    builtin = tmp_path / "builtin"
    wheel = build_wheels([OFFICIAL / "gossip"], builtin)["gossip"]
    identity = create_key(tmp_path / "release.key")
    wheel.with_name(wheel.name + ".sig").write_bytes(sign_file(identity, wheel).to_bytes())
    (builtin / "release-key.pub").write_text(public_key_of(identity) + "\n")
    monkeypatch.setenv("P2PHOST_BUILTIN_DIR", str(builtin))
    # An official plugin: its own wheel (never a bare name an index could answer with
    # someone else's), or the project's command, which takes it from there.
    fix = await _missing_fix(tmp_path / "official", "gossip")
    assert f"pip install --find-links {builtin} {wheel}" in fix
    assert f"cd {tmp_path / 'official'} && p2phost plugin install --yes" in fix
    # A third party's plugin is no p2phost-NAME: from where it came.
    fix = await _missing_fix(tmp_path / "other", "shout-codec")
    assert "shout-codec is not an official plugin" in fix and "from where it came" in fix
    assert "p2phost-shout-codec" not in fix and "pip install" not in fix
    # One p2phost.lock records: its distribution and source.
    locked = tmp_path / "locked"
    locked.mkdir()
    Lock(plugins=(LockedFile(name="shout-codec", version="1.2.0",
                             source="http://127.0.0.1:8470", sha256="0" * 64,
                             filename="acme_shout-1.2.0-py3-none-any.whl"),)
         ).save(locked / "p2phost.lock")
    fix = await _missing_fix(locked, "shout-codec")
    assert f"cd {locked} && p2phost plugin sync (p2phost.lock pins acme-shout 1.2.0 from " \
           "http://127.0.0.1:8470)" in fix


async def test_timeout_none_waits_without_a_deadline_and_a_bad_one_says_what_to_pass(
        state_dir: StateDir) -> None:
    server = p2phost.open_node(manifest=manifest([mem_address()], name="server"),
                               state_dir=state_dir("server"))
    release = asyncio.Event()

    @server.handler("later")
    async def later(message: Message) -> object:
        await release.wait()
        return message.body

    async with server, p2phost.open_node(manifest=manifest(name="client"),
                                         state_dir=state_dir("client")) as client:
        peer = await client.connect(server.addresses[0])
        waiting = [asyncio.create_task(client.request(peer, "later", str(forever), timeout=forever))
                   for forever in (None, math.inf)]
        # A request with a deadline expires beside them; those without one wait on.
        with pytest.raises(p2phost.RequestTimeout):
            await client.request(peer, "later", "short", timeout=0.2)
        await asyncio.sleep(0.3)  # past when the timer fired: nothing may have failed them
        assert not any(task.done() for task in waiting)
        release.set()
        assert await asyncio.gather(*waiting) == ["None", "inf"]
        for bad, said in ((math.nan, "is not a number of seconds"),
                          ("10", "is not a number of seconds"),
                          (True, "is not a number of seconds"),
                          (1e17, "is beyond what a request's deadline can say"),
                          (-1, "is negative"), (-math.inf, "is negative")):
            with pytest.raises(p2phost.UserError, match=said) as exc:
                await client.request(peer, "later", 1, timeout=bad)
            assert "timeout=None to wait for the reply without a deadline" in str(exc.value.fix)
            # The same to a peer not connected (before any wait for it), not "not connected".
            with pytest.raises(p2phost.UserError, match=said):
                await client.request(Identity.generate().peer_id, "later", 1, timeout=bad)
        assert await client.request(peer, "later", "still", timeout=5) == "still"


async def test_a_handler_registered_while_the_node_runs(state_dir: StateDir) -> None:
    server = p2phost.open_node(manifest=manifest([mem_address()], delivery={
        "acked": {"mode": "at-least-once"}}), state_dir=state_dir("s"))
    async with server, p2phost.open_node(manifest=manifest(), state_dir=state_dir("c")) as c:
        with pytest.raises(p2phost.HandlerError, match=r"\[delivery\.acked\]"):
            server.handler("acked")(lambda message: None)  # acknowledged by the manifest

        @server.handler("late", model=Note)
        async def late(message: Message) -> str:
            return message.body.text

        assert "late" in server.topics
        peer = await c.connect(server.addresses[0])
        assert await c.request(peer, "late", {"text": "late"}) == "late"
        hello = c.running.hello_of(peer)  # connected after: the hello has the schema
        assert hello is not None and "late" in hello.extra["schemas"]
        with pytest.raises(p2phost.HandlerError, match="register it first"):
            server.handler("acked", delivery="at-least-once")(late)
        with pytest.raises(p2phost.HandlerError, match="already"):
            server.handler("late")(late)
    node = p2phost.open_node(manifest=manifest(), state_dir=state_dir("m"))
    node.handler("twice")(lambda message: None)
    with pytest.raises(p2phost.HandlerError, match="already"):
        node.handler("twice")(lambda message: None)


async def test_a_topic_peers_cannot_use_is_refused_where_it_is_registered(
        state_dir: StateDir) -> None:
    node = p2phost.open_node(manifest=manifest([mem_address()]), state_dir=state_dir("n"))
    for topic, problem in (("tab\there", r"not printable \('\\t'\)"),
                           ("t" * 256, "it is 256 bytes long in UTF-8, over the 255")):
        with pytest.raises(p2phost.HandlerError, match=problem) as raised:
            node.handler(topic)(lambda message: None)
        assert "which peers cannot use" in raised.value.message
        assert raised.value.fix is not None and "rename the topic" in raised.value.fix
    node.handler("fine/topic ünïcode")(lambda message: None)
    async with node:
        assert node.topics == ["fine/topic ünïcode"]
        with pytest.raises(p2phost.HandlerError, match="which peers cannot use"):
            node.handler("late\x1b[2J")(lambda message: None)  # (a running node's, too)
        assert node.topics == ["fine/topic ünïcode"]


def test_open_node_arguments_are_checked(tmp_path: Path) -> None:
    with pytest.raises(p2phost.LibraryError, match="state_dir"):
        p2phost.open_node(manifest={"plugins": {}})
    with pytest.raises(p2phost.UserError, match=r"no p2phost\.toml"):
        p2phost.open_node(tmp_path)


async def test_a_program_reaches_an_app_plugins_api_by_name(state_dir: StateDir) -> None:
    node = p2phost.open_node(manifest=manifest(plugins=("memory-transport", "json-codec",
                                                        "echo")), state_dir=state_dir("apps"))
    mine = node.add_app(Counter())
    async with node:
        echo = node.app("echo")  # from .p2phost/, which the program never imported
        assert type(echo).__module__.startswith("p2phost_echo")
        assert node.app("counter") is mine
        with pytest.raises(p2phost.LibraryError) as caught:
            node.app("gossip")
    assert "(its apps: counter, echo)" in caught.value.message
    assert caught.value.fix == ("p2phost plugin install gossip (it adds the plugin to "
                                "p2phost.toml's [plugins]), then open the node again")


async def test_a_refused_connection_names_its_kind_by_exported_classes(
        state_dir: StateDir) -> None:
    """A refused dial is a ``PeerUnavailable`` (what a program catches) raised from the
    refusal: ``p2phost.ConnectionRefusedByPeer`` when the peer refused (its reason, code
    and fix), ``p2phost.PeerNotTrusted`` when this node's trust policy did."""
    server = p2phost.open_node(manifest=manifest([mem_address()], name="server",
                                                 trust={"policy": "allowlist"}),
                               state_dir=state_dir("server"))
    async with server, p2phost.open_node(manifest=manifest(name="client"),
                                         state_dir=state_dir("client")) as client:
        with pytest.raises(p2phost.PeerUnavailable) as caught:
            await client.connect(server.addresses[0])
        refusal = caught.value.__cause__
        assert isinstance(refusal, p2phost.ConnectionRefusedByPeer), repr(refusal)
        assert refusal.code == "untrusted" and "not in the allowlist" in refusal.reason
        with pytest.raises(p2phost.PeerUnavailable) as caught:
            await client.request(server.addresses[0], "echo", {})
        assert isinstance(caught.value.__cause__, p2phost.ConnectionRefusedByPeer)
    other = p2phost.open_node(manifest=manifest([mem_address()], name="other"),
                              state_dir=state_dir("other"))
    async with other, p2phost.open_node(manifest=manifest(name="picky",
                                                          trust={"policy": "allowlist"}),
                                        state_dir=state_dir("picky")) as picky:
        with pytest.raises(p2phost.PeerUnavailable) as caught:
            await picky.connect(other.addresses[0])
        untrusted = caught.value.__cause__
        assert isinstance(untrusted, p2phost.PeerNotTrusted), repr(untrusted)
        assert untrusted.peer_id == other.peer_id and "allowlist" in untrusted.why
