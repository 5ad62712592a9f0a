"""Two nodes that dial each other at the same moment (as two Dask processes whose
discovery finds each other do): both ends keep one connection and retire the other, and
what an app sends meanwhile still arrives, and is answered."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from recorder_app import Recorder

import p2phost_sdk
from p2phost._runtime import Kind, Node, decode, encode
from p2phost._runtime.messaging._peers import Peer, PeerTable
from p2phost._runtime.node import _connections
from p2phost._runtime.wire._channel import DUPLICATE, Channel
from p2phost._runtime.wire._handshake import Handshaken
from p2phost._runtime.wire._handshake import handshake as real_handshake
from p2phost_sdk import Connection, Identity, PeerInfo
from p2phost_sdk.testing.discovery import wait_until
from tests.runtime.conftest import build_node
from tests.runtime.rawpeer import RawPeer, dial_as

#: Rounds of simultaneous dials, and how long they may take in all.
ROUNDS, SECONDS = 20, 60.0


class Arrivals(Recorder):
    """A recorder that tells when a peer connects, as dask-comm's ``wait_connected``
    learns it (the app's ``on_peer_connected``)."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived = asyncio.Event()

    async def on_peer_connected(self, peer: PeerInfo) -> None:
        await super().on_peer_connected(peer)
        self.arrived.set()


async def _request_on_arrival(node: Node, app: Arrivals, other: Node) -> int:
    # The dial runs on; the request goes as soon as the app hears of the peer.
    dial = asyncio.create_task(node.connect(other.addresses[0]))
    try:
        await app.arrived.wait()
        reply = await node.request(other.peer_id, "record", node.peer_id, timeout=5.0)
        assert isinstance(reply, int)
        return reply
    finally:
        await asyncio.gather(dial, return_exceptions=True)


async def test_requests_sent_while_a_duplicate_connection_is_retired_are_answered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The request of one end often goes on the connection both ends retire; it was
    # answered on it after the requester had said goodbye there and closed it: the reply
    # was lost, and the request timed out (RequestTimeout after its whole timeout).
    caplog.set_level(logging.DEBUG, "p2phost.node")
    async with asyncio.timeout(SECONDS):
        for _ in range(ROUNDS):
            apps = [Arrivals(), Arrivals()]
            nodes = [build_node("tcp", [app]) for app in apps]
            try:
                for node in nodes:
                    await node.start()
                a, b = nodes
                assert await asyncio.gather(_request_on_arrival(a, apps[0], b),
                                            _request_on_arrival(b, apps[1], a)) == [1, 1]
            finally:
                for node in reversed(nodes):
                    await node.close()
    # (the dials did cross: a duplicate was retired)
    assert "duplicate connection (the other one is kept)" in caplog.text


class Held:
    """Node Y's identity, whose dials stall once their handshake is done (before the
    channel joins the node) until ``release`` is set, and the channels that joined Y."""

    def __init__(self) -> None:
        self.identity, self.release = Identity.generate(), asyncio.Event()
        self.joined: list[Channel] = []


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> Held:
    """Y's kept connection's hello, slow to be taken in (a loaded machine)."""
    held = Held()

    async def handshake(connection: Connection, **options: Any) -> Handshaken:
        done = await real_handshake(connection, **options)
        if options["initiator"] and options["identity"] is held.identity:
            await held.release.wait()
        return done

    def add(table: PeerTable, channel: Channel) -> tuple[Peer, bool, list[Any]]:
        if table.local_peer_id == held.identity.peer_id:
            held.joined.append(channel)
        return real_add(table, channel)

    real_add = PeerTable.add
    monkeypatch.setattr(_connections, "handshake", handshake)
    monkeypatch.setattr(PeerTable, "add", add)
    return held


@contextlib.asynccontextmanager
async def replacing(held: Held, apps: list[Arrivals]) -> AsyncIterator[tuple[Node, Node, Channel]]:
    """Nodes X and Y that dialled each other; both keep Y's dial, whose hello Y has not
    taken in yet; Y has heard X's goodbye on X's dial (yielded as Y's channel)."""
    # The dialler's peer id orders duplicates: Y's must be the smaller for its dial to win.
    other = Identity.generate()
    while other.peer_id < held.identity.peer_id:
        other = Identity.generate()
    x = build_node("tcp", [apps[0]], identity=other)
    y = build_node("tcp", [apps[1]], identity=held.identity)
    dial = None
    try:
        for node in (x, y):
            await node.start()
        dial = asyncio.create_task(y.connect(x.addresses[0]))
        await wait_until(lambda: x._table.get(y.peer_id) is not None, 10, "Y's dial at X")
        assert await x.connect(y.addresses[0]) == y.peer_id  # X's dial: retired by X
        await wait_until(lambda: bool(held.joined), 10, "X's dial at Y")
        (retired,) = held.joined
        await wait_until(lambda: retired.remote_reason == DUPLICATE, 10,
                         "X's goodbye on its dial at Y")
        yield x, y, retired
        assert await dial == x.peer_id
    finally:
        held.release.set()
        if dial is not None:
            await asyncio.gather(dial, return_exceptions=True)
        await y.close()
        await x.close()


async def test_a_request_waits_for_the_kept_connection_while_the_duplicate_is_retired(
    held: Held,
) -> None:
    # Y's only connection to X was X's dial, which X had retired: Y's request failed at
    # once with "peer X is not connected" (Dask's first write after connecting).
    apps = [Arrivals(), Arrivals()]
    async with replacing(held, apps) as (x, y, _):
        request = asyncio.create_task(y.request(x.peer_id, "record", "first"))
        done, _ = await asyncio.wait({request}, timeout=0.2)
        assert not done, "the request waits for the kept connection"
        held.release.set()
        assert await request == 1
        assert apps[0].records == {y.peer_id: ["first"]}


async def test_the_peer_stays_connected_while_its_kept_connection_joins(held: Held) -> None:
    # Y answered X's goodbye at once, and X closed its dial: Y lost its only connection
    # to X before the kept one joined (the peer lost, then connected again; requests
    # waiting for X's replies failed with "the connection was lost").
    apps = [Arrivals(), Arrivals()]
    async with replacing(held, apps) as (x, y, retired):
        peer = y._table.get(x.peer_id)
        assert peer is not None, "Y lost its only connection to X"
        done, _ = await asyncio.wait({asyncio.ensure_future(peer.gone.wait())}, timeout=0.5)
        assert not done and not retired.ended, "X's retired dial stays open at Y"
        held.release.set()
        await wait_until(lambda: retired.ended, 10, "the retired dial closed")
        assert y._table.get(x.peer_id) is peer and len(peer.channels) == 1
        assert peer.best() is not None and peer.best() is not retired
        await wait_until(lambda: bool(apps[1].events), 10, "Y's app heard of X")
        assert apps[1].events == [("connected", x.peer_id)]


async def test_a_request_waiting_for_the_kept_connection_keeps_to_its_timeout(
    held: Held,
) -> None:
    # The wait for the kept connection came before the request's own timeout, which
    # started only once it ended: request(timeout=0.3) took the handshake timeout (5 s)
    # more, then failed with "not connected" rather than RequestTimeout.
    apps = [Arrivals(), Arrivals()]
    async with replacing(held, apps) as (x, y, _):
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(p2phost_sdk.RequestTimeout, match=r"within 0\.3s"):
            await y.request(x.peer_id, "record", "late", timeout=0.3)
        assert loop.time() - started < 1.5, "the request kept to its timeout"
        # A request given more time than the kept connection needs is answered, in it.
        request = asyncio.create_task(y.request(x.peer_id, "record", "first", timeout=3.0))
        await asyncio.sleep(0.2)
        held.release.set()
        assert await request == 1


class Orders(Arrivals):
    """Handles ``orders`` with acknowledgements (the sender declares nothing of it)."""

    @p2phost_sdk.handler("orders", delivery="at-least-once")
    async def orders(self, message: p2phost_sdk.Message) -> None:
        self._record(message)


async def test_a_send_that_waited_for_the_kept_connection_keeps_the_peers_delivery_mode(
    held: Held, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # X handles "orders" with acknowledgements, which a sender's outbox keeps until they
    # come (docs/delivery.md 1: the receiver decides). Y's send found no usable channel,
    # so its outbox passed it to the plain path, which waited for the kept connection
    # and sent it there at most once: no outbox, no resend should that connection drop.
    apps = [Orders(), Arrivals()]
    async with replacing(held, apps) as (x, y, _):
        outbox = y._reliable._outbox
        assert outbox is not None
        kept: list[str] = []
        put = outbox.put

        async def spy(dest: str, topic: str, *args: Any) -> Any:
            kept.append(topic)
            return await put(dest, topic, *args)

        monkeypatch.setattr(outbox, "put", spy)
        send = asyncio.create_task(y.send(x.peer_id, "orders", "first"))
        await asyncio.sleep(0.2)
        held.release.set()
        await send
        await wait_until(lambda: apps[0].records.get(y.peer_id) == ["first"], 10,
                         "X handled the order")
        assert kept == ["orders"], "the order went through Y's outbox"


async def test_a_publish_reaches_a_peer_whose_kept_connection_joins(held: Held) -> None:
    # Y's app heard X connect and X stays connected, yet a publish skipped it (no usable
    # channel) while send() and request() wait for the kept connection: Dask's first
    # broadcast after discovery missed the peer, an acknowledged one too (no outbox row).
    apps = [Arrivals(), Arrivals()]
    async with replacing(held, apps) as (x, y, _):
        assert y._table.get(x.peer_id) is not None
        publish = asyncio.create_task(y.publish("record", "to all"))
        await asyncio.sleep(0.2)
        held.release.set()
        assert await publish == 1
        await wait_until(lambda: apps[0].records.get(y.peer_id) == ["to all"], 10,
                         "X got the publish")


async def test_a_duplicate_goodbye_whose_kept_connection_never_comes_is_answered() -> None:
    # A peer (hostile, or whose kept connection failed here) said "duplicate" on its
    # only connection and kept it open: this node never answered, the peer stayed
    # "replacing" for as long as it liked, and every send to it (and every publish of a
    # topic it handles) waited the whole handshake timeout before it failed.
    node = build_node("tcp", [Arrivals()], handshake_timeout=1.0)
    await node.start()
    try:
        raw, _ = await _raw_joined(node)
        peer_id = raw.identity.peer_id
        await raw.connection.send(encode(Kind.GOODBYE, 0, body=DUPLICATE.encode()))
        said = asyncio.create_task(_goodbye_from(raw))
        assert (await asyncio.wait_for(said, 5.0)) == "goodbye", "the node answered"
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(p2phost_sdk.PeerUnavailable, match="is not connected"):
            await node.send(peer_id, "record", "more")
        assert loop.time() - started < 0.5, "a send fails at once, as to a peer that left"
        await raw.connection.close()
    finally:
        await node.close()


async def _raw_joined(node: Node) -> tuple[RawPeer, Channel]:
    """A raw peer connected to ``node``, and its channel there once it joined."""
    raw = await RawPeer.connect("tcp", node.addresses[0])
    await wait_until(lambda: node._table.get(raw.identity.peer_id) is not None, 10,
                     "the raw peer")
    peer = node._table.get(raw.identity.peer_id)
    assert peer is not None
    (channel,) = peer.channels
    return raw, channel


async def _goodbye_from(raw: RawPeer) -> str:
    # The reason of the first GOODBYE the node sends (its PINGs and PONGs go by).
    while True:
        envelope = decode(await raw.connection.recv())
        if envelope.kind is Kind.GOODBYE:
            return envelope.body.decode()


def _answers_waiting(channel: Channel) -> list[asyncio.TimerHandle]:
    """The timers on the loop that will call ``channel`` (a cancelled one lets it go)."""
    scheduled: list[asyncio.TimerHandle] = asyncio.get_running_loop()._scheduled  # type: ignore[attr-defined]
    return [handle for handle in scheduled if not handle.cancelled()
            and getattr(handle._callback, "__self__", None) is channel]  # type: ignore[attr-defined]


async def test_a_retired_duplicate_answered_when_the_kept_one_joins_leaves_no_timer(
    held: Held,
) -> None:
    # Y's answer to X's goodbye waits (a timer of the handshake timeout) for the kept
    # connection; once it joined, Y answered and the duplicate closed, yet the timer
    # stayed on the loop, holding the ended channel (and all it refers to) until it fired.
    apps = [Arrivals(), Arrivals()]
    async with replacing(held, apps) as (_, _, retired):
        assert _answers_waiting(retired), "Y's late answer waits on the loop"
        held.release.set()
        await wait_until(lambda: retired.ended, 10, "the retired dial closed")
        assert not _answers_waiting(retired), "the answer's timer went with its channel"


async def test_a_duplicate_goodbye_on_a_connection_that_ends_leaves_no_timer() -> None:
    # The peer said "duplicate" (twice: a timer each), then closed the connection before
    # this node answered: the answer's timer outlived the channel it was for.
    node = build_node("tcp", [Arrivals()], handshake_timeout=30.0)
    await node.start()
    try:
        raw, channel = await _raw_joined(node)
        goodbye = encode(Kind.GOODBYE, 0, body=DUPLICATE.encode())
        await raw.connection.send_many([goodbye, goodbye, encode(Kind.PING, 0)])
        await asyncio.wait_for(_pong_from(raw), 10)  # (read after both goodbyes)
        assert len(_answers_waiting(channel)) == 1, "one late answer"
        await raw.connection.close()
        await wait_until(lambda: channel.ended, 10, "the connection ended at the node")
        assert not _answers_waiting(channel), "the answer's timer went with its channel"
    finally:
        await node.close()


async def _pong_from(raw: RawPeer) -> None:
    while decode(await raw.connection.recv()).kind is not Kind.PONG:
        pass


class GatedOrders(Arrivals):
    """Handles ``orders`` with acknowledgements, each once let through."""

    def __init__(self) -> None:
        super().__init__()
        self.began, self.gate = asyncio.Event(), asyncio.Event()

    @p2phost_sdk.handler("orders", delivery="at-least-once")
    async def orders(self, message: p2phost_sdk.Message) -> None:
        self.began.set()
        await self.gate.wait()
        self._record(message)


async def _ack_from(connection: Connection) -> int:
    """The id the first ACK frame the node sends on ``connection`` acknowledges."""
    while True:
        envelope = decode(await connection.recv())
        if envelope.kind is Kind.ACK:
            return envelope.correlation_id


async def test_a_message_on_a_retired_duplicate_is_acknowledged_on_the_kept_one() -> None:
    # A message of an acknowledged topic came on the connection this node retired as a
    # duplicate; its ACK went out on that connection, after this node's goodbye there,
    # when the peer stops reading it (a node closes it once it heard the goodbye, and
    # said its own): the ACK was lost, and the sender sent the message again after its
    # ack-timeout. (A reply goes on the kept connection already: answer_on.)
    app = GatedOrders()
    node = build_node("tcp", [app], handshake_timeout=30.0)
    await node.start()
    connections: list[Connection] = []
    try:
        identity = Identity.generate()
        retired = await dial_as(node.addresses[0], identity, "b")
        connections.append(retired)
        await retired.send(encode(Kind.MESSAGE, 7, b"orders", b'"first"'))
        await asyncio.wait_for(app.began.wait(), 10)
        kept = await dial_as(node.addresses[0], identity, "a")  # the smaller name
        connections.append(kept)
        said = await asyncio.wait_for(_goodbye_from(RawPeer(retired, identity)), 10)
        assert said == DUPLICATE, "the node retired the first connection"
        # The peer reads the retired connection no more (it is about to close it).
        app.gate.set()
        assert await asyncio.wait_for(_ack_from(kept), 5) == 7, "acknowledged where read"
        assert app.records == {identity.peer_id: ["first"]}
    finally:
        for connection in connections:
            await connection.close()
        await node.close()


async def test_a_peer_that_said_goodbye_and_keeps_pinging_is_closed() -> None:
    # A peer said goodbye, was answered, then kept the connection open with PINGs: the
    # keepalive heard it, no side closed it, and it held a place of the peer limit for
    # as long as it liked. The side that says goodbye first closes; should it not, this
    # node does, once it owes the peer nothing (see _connections.keepalive).
    node = build_node("tcp", [Arrivals()], keepalive_interval=0.2, keepalive_timeout=1.0)
    await node.start()
    pinging = None
    try:
        raw, _ = await _raw_joined(node)
        peer_id = raw.identity.peer_id
        await raw.connection.send(encode(Kind.GOODBYE, 0, body=b"leaving"))
        assert await asyncio.wait_for(_goodbye_from(raw), 10) == "goodbye", "answered"
        pinging = asyncio.create_task(_ping_until_closed(raw))
        await wait_until(lambda: node._table.get(peer_id) is None, 10,
                         "the node closed the connection the peer kept open")
        await asyncio.wait_for(pinging, 10)
    finally:
        if pinging is not None:
            pinging.cancel()
        await node.close()


async def _ping_until_closed(raw: RawPeer) -> None:
    # A PING every 0.1 s (the node's keepalive hears traffic) until the node closes.
    while True:
        try:
            await raw.connection.send(encode(Kind.PING, 0))
        except (p2phost_sdk.ConnectionClosed, p2phost_sdk.TransportError):
            return
        await asyncio.sleep(0.1)


async def test_a_peer_that_said_goodbye_is_kept_while_a_reply_from_it_is_due() -> None:
    # Its replies may follow its goodbye (docs/wire.md 4.2): the connection it keeps
    # open is not closed under a request of this node's that waits for one.
    node = build_node("tcp", [Arrivals()], keepalive_interval=0.2, keepalive_timeout=1.0)
    await node.start()
    pinging = None
    try:
        identity = Identity.generate()
        connection = await dial_as(node.addresses[0], identity, "a")
        raw = RawPeer(connection, identity)
        await wait_until(lambda: node._table.get(identity.peer_id) is not None, 10, "raw")
        request = asyncio.create_task(node.request(identity.peer_id, "work", 1, timeout=30))
        asked = await asyncio.wait_for(_request_from(raw), 10)
        await connection.send(encode(Kind.GOODBYE, 0, body=b"leaving"))
        assert await asyncio.wait_for(_goodbye_from(raw), 10) == "goodbye", "answered"
        pinging = asyncio.create_task(_ping_until_closed(raw))
        await asyncio.sleep(3.0)  # three keepalive timeouts: no sign of a deadline
        assert node._table.get(identity.peer_id) is not None, "kept for the reply"
        await connection.send(encode(Kind.REPLY, 9, body=b'"done"', correlation_id=asked))
        assert await request == "done"
        await wait_until(lambda: node._table.get(identity.peer_id) is None, 10,
                         "closed once nothing was due")
    finally:
        if pinging is not None:
            pinging.cancel()
        await node.close()


async def _request_from(raw: RawPeer) -> int:
    while (envelope := decode(await raw.connection.recv())).kind is not Kind.REQUEST:
        pass
    return envelope.message_id
