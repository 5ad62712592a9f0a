"""A Dask comm's stream over p2phost messages: whole messages, large frames in parts
received into one buffer each, bounds against a peer that sends too much, addresses."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from p2phost_sdk import ConnectionClosed, FrameTooLarge, Identity, Raw

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "official-plugins/dask-comm/src"))

from p2phost_dask_comm import Address, BadAddress
from p2phost_dask_comm._streams import CLOSE, HEAD, MESSAGE, PART, Stream, parse_part

PEER = Identity.generate().peer_id


def pair(chunk: int = 4, limit: int = 64) -> tuple[Stream, Stream, list[tuple[str, bool]]]:
    """A sender whose bodies are fed straight into a receiver; the closes each told."""
    told: list[tuple[str, bool]] = []
    receiver = Stream(PEER, 1, mine=False, send=_never, chunk=chunk, limit=limit,
                      on_closed=lambda s, reason, tell: told.append((reason, tell)))

    async def send(body: list[Any] | Raw) -> None:
        if isinstance(body, Raw):  # a part, as the receiving node hands it over
            receiver.feed(PART, parse_part(memoryview(body.tobytes()))[2])
            return
        receiver.feed(body[0], body[3])

    sender = Stream(PEER, 1, mine=True, send=send, chunk=chunk, limit=limit,
                    on_closed=lambda s, reason, tell: None)
    return sender, receiver, told


async def _never(body: list[Any]) -> None:
    raise AssertionError("the receiver sends nothing here")


async def test_small_and_large_messages_arrive_whole_and_in_order() -> None:
    sender, receiver, _ = pair()
    await sender.write([memoryview(b"ab")])
    await sender.write([memoryview(b"head"), memoryview(b""), memoryview(b"0123456789")])
    assert [bytes(f) for f in await receiver.read()] == [b"ab"]
    assert [bytes(f) for f in await receiver.read()] == [b"head", b"", b"0123456789"]


async def test_what_was_sent_before_the_close_is_read_then_the_stream_ends() -> None:
    _, receiver, _ = pair()
    receiver.feed(MESSAGE, [b"last"])
    receiver.feed(CLOSE, "bye")
    assert await receiver.read() == [b"last"]
    with pytest.raises(ConnectionClosed, match="bye"):
        await receiver.read()


async def test_a_message_over_the_buffer_is_refused_before_any_allocation() -> None:
    _, receiver, told = pair(limit=64)
    receiver.feed(HEAD, [10**12])
    assert told and told[0][1] and "stream-buffer" in told[0][0]
    with pytest.raises(ConnectionClosed):
        await receiver.read()


async def test_unread_messages_past_the_buffer_close_the_stream() -> None:
    _, receiver, told = pair(limit=8)
    for _ in range(3):
        receiver.feed(MESSAGE, [b"12345"])
    assert told and told[0][1] and "left unread" in told[0][0]


def test_parts_that_run_past_their_frame_are_refused() -> None:
    _, receiver, _ = pair()
    receiver.feed(HEAD, [6])
    receiver.feed(PART, b"1234")
    with pytest.raises(ValueError, match="past its message"):
        receiver.feed(PART, b"5678")


def test_addresses() -> None:
    assert str(Address.parse(PEER)) == f"p2phost://{PEER}"
    assert Address.parse(f"{PEER}/2") == Address(PEER, "2")
    assert Address.listening(":8786") == Address("", "")
    with pytest.raises(BadAddress, match="fix:"):
        Address.parse("127.0.0.1:8786")


def test_the_plugin_exports_exactly_its_intended_names() -> None:
    import p2phost_dask_comm

    assert set(p2phost_dask_comm.__all__) == {
        "DASK_TOPIC", "KEY_ENV", "PROJECT_ENV", "SCHEME", "Address", "BadAddress",
        "DaskCommApp", "DaskCommError", "NoListener", "NoProject", "NodeHolder",
        "P2PHostBackend", "P2PHostComm", "P2PHostConnector", "P2PHostListener",
        "PeerNotReached", "p2phost_apps"}


async def test_a_process_without_a_project_is_told_how_to_name_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from p2phost_dask_comm import NoProject
    from p2phost_dask_comm._node import open_dask_node

    monkeypatch.setenv("P2PHOST_PROJECT", str(tmp_path))
    with pytest.raises(NoProject, match="fix: export P2PHOST_PROJECT=DIR"):
        await open_dask_node()


async def test_a_medium_that_carries_less_than_a_chunk_gets_smaller_parts() -> None:
    sender, receiver, _ = pair(chunk=8192, limit=1 << 20)
    inner = sender._send

    async def small_medium(body: list[Any] | Raw) -> None:
        size = body.nbytes if isinstance(body, Raw) else \
            sum(len(x) for x in body[3]) if body[0] == MESSAGE else 0
        if size > 3000:
            raise FrameTooLarge("over the medium's 3000 bytes")
        await inner(body)

    sender._send = small_medium
    data = bytes(range(256)) * 30
    await sender.write([memoryview(b"x"), memoryview(data)])
    assert [bytes(f) for f in await receiver.read()] == [b"x", data]


async def test_a_large_message_arrives_in_one_buffer_dask_merges_without_a_copy() -> None:
    # Dask splits a large array into shards (frames of 64 MiB): it joins them again
    # without a copy only when they are adjacent slices of one buffer, as its TCP
    # comm reads them.
    from distributed.protocol.utils import merge_memoryviews

    sender, receiver, _ = pair(chunk=4, limit=1 << 20)
    shards = [b"0123456789", b"abcdefg", b"XYZ"]
    await sender.write([memoryview(b"header"), *map(memoryview, shards)])
    frames = await receiver.read()
    assert [bytes(f) for f in frames] == [b"header", *shards]
    merged = merge_memoryviews(frames[1:])  # ValueError unless one buffer holds them
    assert bytes(merged) == b"".join(shards)
    assert merged.obj is frames[1].obj
