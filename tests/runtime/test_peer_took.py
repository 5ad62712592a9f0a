"""How a channel tells a slow reader from one that stopped: ``Channel.peer_took``, with the
connection's unsent bytes scripted (a real TCP pair underneath)."""

from __future__ import annotations

import pytest

from p2phost_sdk import App, ConnectionClosed
from p2phost_sdk.testing.discovery import wait_until

from .conftest import channel_of, tcp_pair

MB = 1024 * 1024


async def test_a_write_that_ended_unsampled_counts_at_the_first_look() -> None:
    """A 4 MiB reply handed over before the write's own timeout sampled it leaves megabytes
    in the kernel; the keepalive's first look at them is progress, with a whole timeout to
    take more (it once closed a steady 400 KB/s reader at once, and then, for a reader
    that takes 512 KiB every 1.3 s, gave it only until the next look)."""
    async with tcp_pair(App()) as (server, client):
        channel = channel_of(server, client.peer_id)
        unsent = [3 * MB]
        channel.connection.unsent = lambda: unsent[0]  # type: ignore[method-assign]
        channel._handed += 4 * MB  # what the write handed over (it ended: no sample)
        before = channel.progress_at
        assert channel.peer_took() and channel.progress_at > before  # a MiB went
        first = channel.progress_at
        assert not channel.peer_took()  # nothing more taken: no progress...
        assert channel.progress_at == first  # ...and its timeout runs from the first look
        unsent[0] -= 400_000  # the reader took some
        assert channel.peer_took() and channel.progress_at > first


async def test_nothing_waiting_and_nothing_taken_is_no_sign() -> None:
    async with tcp_pair(App()) as (server, client):
        channel = channel_of(server, client.peer_id)
        channel.connection.unsent = lambda: 0  # type: ignore[method-assign]
        channel._handed += 1000  # small frames a silent peer's kernel took
        assert not channel.peer_took()
        assert not channel.peer_took()


async def test_a_send_on_a_channel_closed_for_not_reading_says_why() -> None:
    """What a sender waiting for room hears when the channel ends: the reason it was
    closed (it was a bare "connection ... is closed")."""
    async with tcp_pair(App()) as (server, client):
        channel = channel_of(server, client.peer_id)
        await channel.close("the peer does not read: a write to it was not taken for 3s")
        await wait_until(lambda: channel.ended, 5, "the channel ending")
        with pytest.raises(ConnectionClosed, match=r"is closed \(the peer does not read: a "):
            await channel.send(b"x")
