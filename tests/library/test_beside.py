"""A node opened beside the project's own, as a Dask process opens one: an identity and a
name of its own, no state in the project's .p2phost/, its codecs first, fallback apps."""

from __future__ import annotations

from pathlib import Path

import pytest

import p2phost
from p2phost_sdk import App, Identity, Message, handler
from tests.library.conftest import StateDir, manifest

JSON, MSGPACK = "application/json", "application/msgpack"


class MyEcho(App):
    """A program's own app on the topic of the echo plugin."""

    name = "my-echo"

    @handler("echo")
    async def echo(self, message: Message) -> str:
        return "mine"


def project(state_dir: StateDir, name: str, *plugins: str) -> Path:
    """A project directory whose nodes listen on a free port (its p2phost.toml written
    by an open_node that is never opened)."""
    root = state_dir(name)
    p2phost.open_node(manifest=manifest(["tcp://127.0.0.1:0"], plugins=(
        "tcp-transport", "json-codec", *plugins)), state_dir=root)
    return root


def beside(root: Path, **options: object) -> p2phost.AsyncNode:
    return p2phost.open_node(root, identity=Identity.generate(), control=False,
                             keep_state=False, **options)  # type: ignore[arg-type]


async def test_a_node_beside_the_projects_own_has_its_identity_and_writes_no_state(
        state_dir: StateDir) -> None:
    root = project(state_dir, "beside")
    state = root / ".p2phost"
    own = Identity.generate()
    async with p2phost.open_node(root) as running:
        files = sorted(p.name for p in state.iterdir())
        node = p2phost.open_node(root, identity=own, name="dask-1", control=False,
                                 keep_state=False)
        assert node.peer_id == own.peer_id
        async with node:  # the running node keeps its journal locked: this one has none
            assert node.peer_id == own.peer_id != running.peer_id
            assert await node.connect(running.addresses[0]) == running.peer_id
            assert sorted(p.name for p in state.iterdir()) == files
            assert node.running.options.name == "dask-1"


async def test_two_nodes_of_one_project_keep_their_state_apart_only_when_asked(
        state_dir: StateDir) -> None:
    root = project(state_dir, "clash")
    async with p2phost.open_node(root):
        # The delivery journal is the running node's (locked while it runs).
        with pytest.raises(Exception, match="in use by another node of this project"):
            async with p2phost.open_node(root, identity=Identity.generate(), control=False):
                pass


async def test_the_codecs_asked_for_are_offered_first(state_dir: StateDir) -> None:
    root = project(state_dir, "codecs", "msgpack-codec")
    async with p2phost.open_node(root) as listener, \
            beside(root, codecs=[MSGPACK]) as first, beside(root) as plain:
        # The dialler's first codec the listener also has is the connection's.
        await first.connect(listener.addresses[0])
        await plain.connect(listener.addresses[0])
        assert [p.codec for p in first.peers()] == [MSGPACK]
        assert [p.codec for p in plain.peers()] == [JSON]


async def test_a_codec_no_plugin_provides_is_named_with_its_fix(state_dir: StateDir) -> None:
    root = project(state_dir, "no-msgpack")
    with pytest.raises(p2phost.CodecMissing, match="no codec for application/msgpack") as err:
        async with beside(root, codecs=[MSGPACK]):
            pass
    assert err.value.content_type == MSGPACK
    assert err.value.fix is not None and "msgpack-codec" in err.value.fix


async def test_a_fallback_app_runs_only_where_the_manifest_leaves_its_topic_free(
        state_dir: StateDir) -> None:
    with_echo = project(state_dir, "with-echo", "echo")
    async with beside(with_echo, fallback_apps=[MyEcho()]) as node:
        assert node.app("echo") and "echo" in node.topics
        with pytest.raises(p2phost.LibraryError, match="no app called 'my-echo'"):
            node.app("my-echo")
    async with beside(project(state_dir, "without"), fallback_apps=[MyEcho()]) as node:
        assert isinstance(node.app("my-echo"), MyEcho)
        assert node.topics == ["echo"]


def test_the_blocking_node_takes_the_same_options(state_dir: StateDir) -> None:
    root = project(state_dir, "blocking", "msgpack-codec")
    own = Identity.generate()
    with p2phost.connect(root, identity=own, name="dask-2", control=False, keep_state=False,
                         codecs=[MSGPACK], fallback_apps=[MyEcho()]) as node:
        assert node.node.peer_id == own.peer_id
        assert node.node.running.options.name == "dask-2"
        assert node.node.running.options.state_dir is None
        assert isinstance(node.node.app("my-echo"), MyEcho)


def test_a_missing_project_is_a_project_not_found(tmp_path: Path) -> None:
    with pytest.raises(p2phost.ProjectNotFound):
        p2phost.open_node(tmp_path / "nowhere")
