"""The one-way path's per-message lookups, found without a key built per message.

* The reader decodes a frame's topic only when it differs from the last frame's: a
  frame on the same topic (most of a burst) reuses the string, its hash computed for the
  route's lookup already. A topic that is not UTF-8 is still a protocol error.
* A channel keeps its peer's tallies by topic (bounded), and a dispatcher a MESSAGE's
  header by topic: no (topic, peer) or (kind, topic) tuple per message, and what is
  counted is what the stats show.
* Node.send takes the peer's current channel itself while it is usable (the dialler is
  asked otherwise), and searches only an id the peer table does not hold for "://".
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from p2phost._runtime import Kind, Node, encode
from p2phost._runtime.messaging._stats import TALLIED_TOPICS, DeliveryStats, Tally
from p2phost_sdk import App, Message, PeerUnavailable, handler
from p2phost_sdk.testing.discovery import wait_until
from tests.discovery.plugins import use_plugin_source
from tests.runtime.conftest import channel_of, tcp_pair

for _name in ("tcp-transport", "msgpack-codec"):
    use_plugin_source(_name)

from p2phost_msgpack_codec import MsgpackCodec  # noqa: E402


class Topics(App):
    """Records each message's topic string, in order."""

    name = "topics"

    def __init__(self) -> None:
        self.seen: list[str] = []

    @handler("alpha")
    async def alpha(self, message: Message) -> None:
        self.seen.append(message.topic)

    @handler("beta")
    async def beta(self, message: Message) -> None:
        self.seen.append(message.topic)


@pytest.fixture
async def nodes() -> AsyncIterator[tuple[Node, Node, Topics]]:
    """A server with a :class:`Topics` app, and a client connected to it."""
    app = Topics()
    async with tcp_pair(app) as (server, client):
        yield server, client, app


# -- the reader's topic ------------------------------------------------------------------

async def test_frames_on_the_same_topic_share_its_string(
    nodes: tuple[Node, Node, Topics],
) -> None:
    server, client, app = nodes
    order = ["alpha", "alpha", "alpha", "beta", "beta", "alpha"]
    for topic in order:
        await client.send(server.peer_id, topic, b"x")
    await wait_until(lambda: len(app.seen) == len(order), 10, "all handled")
    assert app.seen == order
    alpha, beta = app.seen[0], app.seen[3]
    assert app.seen[1] is alpha and app.seen[2] is alpha, "decoded anew per frame"
    assert app.seen[4] is beta
    # A topic again after another: decoded again (only the last one is kept).
    assert app.seen[5] == "alpha"


async def test_a_topic_that_is_not_utf8_still_ends_the_connection(
    nodes: tuple[Node, Node, Topics],
) -> None:
    server, client, app = nodes
    await client.send(server.peer_id, "alpha", b"x")
    await wait_until(lambda: len(app.seen) == 1, 10, "the first handled")
    channel = channel_of(client, server.peer_id)
    # The same length as the known topic, one byte not UTF-8.
    channel.post(encode(Kind.MESSAGE, 7, b"alph\xff", MsgpackCodec().encode(b"x")))
    await wait_until(lambda: server.peer_id not in client._table.peers
                     or not client._table.peers[server.peer_id].channels, 10,
                     "the server closed the connection")
    await asyncio.sleep(0)
    assert app.seen == ["alpha"]


# -- tallies and headers -----------------------------------------------------------------

async def test_both_ends_count_in_the_channels_tally(
    nodes: tuple[Node, Node, Topics],
) -> None:
    server, client, app = nodes
    for _ in range(5):
        await client.send(server.peer_id, "alpha", b"12345")
    await wait_until(lambda: len(app.seen) == 5, 10, "all handled")
    for node, other, field in ((server, client, "received"), (client, server, "sent")):
        stats = node._dispatch.stats
        tally = channel_of(node, other.peer_id).tallies["alpha"]
        assert tally is stats.tallies["alpha", other.peer_id], "not the stats' own tally"
        assert getattr(tally, field) == 5
        assert stats.snapshot()["by_peer"][other.peer_id]["alpha"][field] == 5
    assert channel_of(server, client.peer_id).tallies["alpha"].handled == 5
    # The MESSAGE header the sender packed once, found by the topic alone.
    assert "alpha" in client._dispatch._message_headers


def test_a_channel_keeps_a_bounded_number_of_tallies() -> None:
    stats, tallies = DeliveryStats(topic_labels=1000), dict[str, Tally]()
    for n in range(TALLIED_TOPICS + 10):
        tally = stats.tally_of(tallies, f"t{n}", "peer")
        assert tally is stats.tally(f"t{n}", "peer")
    assert len(tallies) == TALLIED_TOPICS
    assert "t0" in tallies and f"t{TALLIED_TOPICS}" not in tallies


# -- Node.send's channel -----------------------------------------------------------------

async def test_send_asks_the_dialler_only_without_a_usable_current_channel(
    nodes: tuple[Node, Node, Topics], monkeypatch: pytest.MonkeyPatch,
) -> None:
    server, client, app = nodes
    asked: list[str] = []
    usable = client._dialler.usable

    def counted(peer: str) -> Any:
        asked.append(peer)
        return usable(peer)

    monkeypatch.setattr(client._dialler, "usable", counted)
    await client.send(server.peer_id, "alpha", b"x")
    await wait_until(lambda: len(app.seen) == 1, 10, "the first handled")
    assert asked == [], "the dialler was asked for the current, usable channel"
    # The current channel not usable (closing, say): the dialler picks another, here none.
    current = client._table.peers[server.peer_id].current
    assert current is not None
    monkeypatch.setattr(current, "usable", False)
    with pytest.raises(PeerUnavailable, match="is not connected"):
        await client.send(server.peer_id, "alpha", b"x")
    assert asked == [server.peer_id]


async def test_send_to_a_connected_peer_does_not_search_its_id_for_an_address(
    nodes: tuple[Node, Node, Topics],
) -> None:
    """An inbox address has "://"; a connected peer's id is found in the peer table
    first, and is not searched (a substring search of a 52-character id per message)."""
    server, client, app = nodes
    searched: list[str] = []

    class Watched(str):
        def __contains__(self, part: object) -> bool:
            searched.append(str(part))
            return super().__contains__(str(part))

    await client.send(Watched(server.peer_id), "alpha", b"x")
    await wait_until(lambda: len(app.seen) == 1, 10, "handled")
    assert searched == []


# -- Channel.try_post behind queued frames -------------------------------------------------

async def test_try_post_behind_queued_frames_keeps_the_outbox_bounds(
    nodes: tuple[Node, Node, Topics],
) -> None:
    """Behind queued frames (most of a burst) try_post takes its own short path: it still
    refuses once the queued bytes reach the outbox limit, and a frame that would pass the
    hard limit; what it took goes out in order."""
    server, client, app = nodes
    channel = channel_of(client, server.peer_id)
    frame = encode(Kind.MESSAGE, 1, b"alpha", MsgpackCodec().encode(b"x" * 1000))
    channel._wrote_directly = True  # (this loop step wrote already: the outbox queues)
    # (and the transport takes no run of frames at once, as while its buffer holds some)
    channel._try_send_many = lambda frames: False
    taken = 0
    while channel.try_post(frame):
        taken += 1
    assert channel._outbox_bytes >= channel._limit > channel._outbox_bytes - len(frame)
    assert taken == len(channel._outbox)
    # Room again (as if the writer took some), yet a frame over the hard limit is refused.
    del channel._outbox[1:]
    channel._outbox_bytes = len(frame)
    assert not channel.try_post(b"\0" * channel._hard_limit)
    assert channel.try_post(frame)
    await wait_until(lambda: len(app.seen) == 2, 10, "what was taken is handled")


# -- a simple item: the mailbox's task runs its handler with no start/finish call ---------

async def test_a_one_way_handler_raising_before_its_first_await_is_counted_failed(
    nodes: tuple[Node, Node, Topics],
) -> None:
    """A plain MESSAGE runs in the mailbox's task without Dispatcher.start, whose try
    turned a handler's synchronous exception into its failure: the task's own try must
    too (not the mailbox's bug guard), and the peer's next messages still run, in order."""
    server, client, app = nodes
    seen: list[Any] = []

    def eager(message: Message) -> Any:  # not an async def: it raises at once
        if message.body == b"bad":
            raise ValueError("bad on purpose")
        seen.append(message.body)
        return asyncio.sleep(0)

    server.add_handler(app, "eager", eager)
    for body in (b"1", b"bad", b"2"):
        await client.send(server.peer_id, "eager", body)
    stats = server.delivery.stats
    await wait_until(lambda: stats.get("eager", "handled") == 2, 10, "both handled")
    assert seen == [b"1", b"2"]
    assert (stats.get("eager", "failed"), stats.get("eager", "received")) == (1, 3)


async def test_a_one_way_message_past_its_deadline_is_still_dropped(
    nodes: tuple[Node, Node, Topics],
) -> None:
    """A MESSAGE frame with a deadline is not a simple item: one already past it is
    dropped before its handler (Dispatcher.start's check), not run."""
    server, client, app = nodes
    channel = channel_of(client, server.peer_id)
    body = MsgpackCodec().encode(b"x")
    channel.post(encode(Kind.MESSAGE, 7, b"beta", body, deadline=1))  # 1970: expired
    await client.send(server.peer_id, "alpha", b"x")
    await wait_until(lambda: app.seen == ["alpha"], 10, "the next message handled")
    stats = server.delivery.stats
    assert (stats.get("beta", "received"), stats.get("beta", "dropped")) == (1, 1)
    assert stats.get("beta", "handled") == 0


async def test_a_traced_message_to_a_node_that_does_not_trace_is_handled(
    nodes: tuple[Node, Node, Topics],
) -> None:
    """The reader hands a traced frame to Dispatcher.received whether this node traces
    or not: with no tracer the context is dropped, and the message is a simple item
    (its handler run and counted), not one whose context a missing tracer would enter."""
    server, client, app = nodes
    assert server._dispatch.tracer is None
    channel = channel_of(client, server.peer_id)
    trace = bytes(range(1, 25)) + b"\x01"  # trace id, span id, flags: sampled
    channel.post(encode(Kind.MESSAGE, 7, b"alpha", MsgpackCodec().encode(b"x"), trace=trace))
    await wait_until(lambda: app.seen == ["alpha"], 10, "the traced message handled")
    stats = server.delivery.stats
    await wait_until(lambda: stats.get("alpha", "handled") == 1, 10, "counted handled")
    assert stats.get("alpha", "failed") == 0
