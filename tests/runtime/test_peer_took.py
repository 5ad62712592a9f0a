"""How a channel tells a slow reader from one that stopped: ``Channel.peer_took``, with the
connection's unsent bytes scripted (a real TCP pair underneath)."""

from __future__ import annotations

from p2phost_sdk import App

from .conftest import channel_of, tcp_pair

MB = 1024 * 1024


async def test_a_write_that_ended_unsampled_is_judged_at_the_next_look() -> None:
    """A 4 MiB reply handed over before the write's own timeout sampled it leaves megabytes
    in the kernel; the keepalive's first look has no baseline, so it is no reason to close
    (it once was: a steady 400 KB/s reader was cut at the keepalive timeout)."""
    async with tcp_pair(App()) as (server, client):
        channel = channel_of(server, client.peer_id)
        unsent = [3 * MB]
        channel.connection.unsent = lambda: unsent[0]  # type: ignore[method-assign]
        channel._handed += 4 * MB  # what the write handed over (it ended: no sample)
        before = channel.progress_at
        assert channel.peer_took()  # first look: bytes wait, nothing to compare with
        assert channel.progress_at == before  # not progress either
        unsent[0] -= 400_000  # the reader took some
        assert channel.peer_took() and channel.progress_at > before
        assert not channel.peer_took()  # and then nothing: the next look says so


async def test_nothing_waiting_and_nothing_taken_is_no_sign() -> None:
    async with tcp_pair(App()) as (server, client):
        channel = channel_of(server, client.peer_id)
        channel.connection.unsent = lambda: 0  # type: ignore[method-assign]
        channel._handed += 1000  # small frames a silent peer's kernel took
        assert not channel.peer_took()
        assert not channel.peer_took()
