"""The blocking API: the node's loop in a background thread, called from plain code, from
several threads at once and from inside a running event loop (as a Jupyter cell is)."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import p2phost
from p2phost import Message
from tests.library.conftest import StateDir, manifest, mem_address


def _echo_server(state_dir: StateDir) -> p2phost.BlockingNode:
    server = p2phost.connect(manifest=manifest([mem_address()], name="server"),
                             state_dir=state_dir("server"))

    @server.handler("echo")
    def echo(message: Message) -> object:  # plain function: runs in a worker thread
        return {"echo": message.body, "thread": threading.current_thread().name}

    return server


def test_blocking_calls_from_several_threads(state_dir: StateDir) -> None:
    with _echo_server(state_dir) as server, \
            p2phost.connect(manifest=manifest(), state_dir=state_dir("client")) as client:
        peer = client.connect(server.addresses[0])
        reply = client.request(peer, "echo", 1)
        assert reply["echo"] == 1 and reply["thread"] != threading.current_thread().name

        def ask(i: int) -> object:
            return client.request(peer, "echo", i)["echo"]

        with ThreadPoolExecutor(8) as pool:
            assert sorted(pool.map(ask, range(64))) == list(range(64))
        assert client.publish("echo", "all") == 1
        assert [p.peer_id for p in client.peers()] == [server.peer_id]
        assert client.disconnect(peer) and client.peers() == []
    with pytest.raises(p2phost.NodeClosed):
        client.request(peer, "echo", 1)
    client.close()  # closing twice is fine


def test_a_blocking_request_without_a_deadline_waits_on_the_nodes_own_loop(
        state_dir: StateDir) -> None:
    # The blocking node's loop is uvloop's where it is installed: no timer is armed for
    # a request without a deadline there either.
    release = threading.Event()
    server = p2phost.connect(manifest=manifest([mem_address()], name="server"),
                             state_dir=state_dir("server"))

    @server.handler("later")
    def later(message: Message) -> object:
        release.wait(10)
        return message.body

    with server, p2phost.connect(manifest=manifest(), state_dir=state_dir("client")) as client:
        peer = client.connect(server.addresses[0])
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(client.request, peer, "later", "waited", timeout=None)
            with pytest.raises(p2phost.RequestTimeout):
                client.request(peer, "later", "short", timeout=0.2)
            assert not waiting.done()
            release.set()
            assert waiting.result(10) == "waited"
        with pytest.raises(p2phost.UserError, match="timeout=nan is not a number"):
            client.request(peer, "later", 1, timeout=math.nan)


def test_blocking_calls_from_inside_a_running_loop(state_dir: StateDir) -> None:
    async def cell() -> object:  # what a notebook cell runs: a loop is running already
        with _echo_server(state_dir) as server, \
                p2phost.connect(manifest=manifest(), state_dir=state_dir("c")) as client:
            return client.request(client.connect(server.addresses[0]), "echo", "hi")["echo"]

    assert asyncio.run(cell()) == "hi"


def test_a_blocking_call_from_the_nodes_own_loop_is_refused(state_dir: StateDir) -> None:
    with p2phost.connect(manifest=manifest([mem_address()]), state_dir=state_dir("s")) as node:
        async def inside() -> None:
            node.stats()

        with pytest.raises(p2phost.LibraryError, match="wait for itself"):
            node._call(inside)  # what an async handler calling the blocking node does


def test_closing_under_calls_from_other_threads_leaves_none_hanging(
        state_dir: StateDir) -> None:
    with _echo_server(state_dir) as server:
        client = p2phost.connect(manifest=manifest(), state_dir=state_dir("c"))
        client.open()
        peer = client.connect(server.addresses[0])
        outcomes: list[str] = []

        def keep_asking() -> None:
            try:
                for i in range(10_000):
                    client.request(peer, "echo", i)
            except (p2phost.NodeClosed, p2phost.PeerUnavailable) as exc:
                outcomes.append(type(exc).__name__)

        threads = [threading.Thread(target=keep_asking) for _ in range(4)]
        for thread in threads:
            thread.start()
        client.close()
        for thread in threads:
            thread.join(20)
        assert not any(t.is_alive() for t in threads) and len(outcomes) == 4


def test_a_plain_handler_registered_on_an_open_blocking_node(state_dir: StateDir) -> None:
    with p2phost.connect(manifest=manifest([mem_address()]), state_dir=state_dir("s")) as s:
        s.handler("late")(lambda message: f"late {message.body}")
        with p2phost.connect(manifest=manifest(), state_dir=state_dir("c")) as client:
            assert client.request(client.connect(s.addresses[0]), "late", 1) == "late 1"


def test_a_blocking_handler_disconnects_its_own_sender_at_once(state_dir: StateDir) -> None:
    # Its thread carries the handler's context: the disconnect does not wait for the
    # peer's mailbox, which waits for this handler.
    server = p2phost.connect(manifest=manifest([mem_address()], name="server"),
                             state_dir=state_dir("server"))
    took: list[float] = []

    @server.handler("kick")
    def kick(message: Message) -> object:  # runs in a worker thread
        started = time.monotonic()
        assert server.disconnect(message.sender, reason="kicked")
        took.append(time.monotonic() - started)
        return "bye"

    with server, p2phost.connect(manifest=manifest(), state_dir=state_dir("client")) as client:
        client.send(client.connect(server.addresses[0]), "kick", 1)
        deadline = time.monotonic() + 15
        while not took and time.monotonic() < deadline:
            time.sleep(0.02)
        assert took and took[0] < 2  # (the drain timeout is 10 s)
