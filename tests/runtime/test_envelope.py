"""The envelope format (docs/wire.md): exact bytes, round trips, and hostile frames."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2phost._runtime import VERSION, Envelope, Hello, Kind, WireError, choose_codec, decode
from p2phost_sdk import HandshakeError


def test_the_documented_layout() -> None:
    frame = Envelope(Kind.REQUEST, 0x0102030405060708, "echo", b"{}", correlation_id=9,
                     deadline=1_700_000_000_000, content_type="application/json").to_frame()
    assert frame == (
        bytes([1, 1]) + bytes.fromhex("0102030405060708") + (9).to_bytes(8, "big")
        + (1_700_000_000_000).to_bytes(8, "big") + bytes([0, 0, 4, 16])
        + b"echo" + b"application/json" + b"{}"
    )
    assert decode(frame) == Envelope(Kind.REQUEST, 0x0102030405060708, "echo", b"{}", 9,
                                     1_700_000_000_000, "", "", "application/json")


names = st.text(max_size=40).filter(lambda s: len(s.encode()) <= 255)


@given(kind=st.sampled_from(list(Kind)), mid=st.integers(0, 2**64 - 1),
       corr=st.integers(0, 2**64 - 1), deadline=st.integers(0, 2**64 - 1),
       sender=names, recipient=names, topic=names, content_type=names, body=st.binary())
def test_every_envelope_round_trips(kind: Kind, mid: int, corr: int, deadline: int, sender: str,
                                    recipient: str, topic: str, content_type: str,
                                    body: bytes) -> None:
    envelope = Envelope(kind, mid, topic, body, corr, deadline, sender, recipient, content_type)
    assert decode(envelope.to_frame()) == envelope


@given(st.binary(max_size=200))
def test_any_bytes_decode_or_raise_wire_error(frame: bytes) -> None:
    try:
        envelope = decode(frame)
    except WireError as exc:
        assert str(exc)
    else:
        assert envelope.to_frame() == frame


@pytest.mark.parametrize(("frame", "message"), [
    (b"", "shorter than the 30-byte envelope header"),
    (b"\x07", "unknown envelope version 7"),
    (bytes([2]) + bytes(40), "unknown envelope version 2"),
    (bytes([VERSION, 200]) + bytes(28), "unknown envelope kind 200"),
    (struct.pack("!BBQQQBBBB", 1, 0, 1, 0, 0, 9, 0, 0, 0), "longer than the frame"),
    (struct.pack("!BBQQQBBBB", 1, 0, 1, 0, 0, 0, 0, 2, 0) + b"\xff\xfe", "not UTF-8"),
])
def test_bad_frames_say_what_is_wrong(frame: bytes, message: str) -> None:
    with pytest.raises(WireError, match=message):
        decode(frame)


def test_a_topic_longer_than_255_bytes_cannot_be_encoded() -> None:
    with pytest.raises(WireError, match="out of range"):
        Envelope(Kind.MESSAGE, 1, "t" * 256, b"").to_frame()


def test_hello_round_trip_and_codec_choice() -> None:
    hello = Hello(peer_id="a" * 52, codecs=("application/msgpack", "application/json"),
                  topics=("chat",), listen=("tcp://127.0.0.1:1",), session="s", nonce="n",
                  name="alice", max_frame_size=1024, extra={"future": True})
    assert Hello.from_envelope(decode(hello.to_frame())) == hello
    assert choose_codec(["application/msgpack", "application/json"],
                        ["application/json", "application/msgpack"]) == "application/msgpack"
    assert choose_codec(["application/json"], ["application/msgpack"]) is None


@pytest.mark.parametrize(("body", "message"), [
    (b"[1]", "not a JSON object"),
    (b"{nope", "not valid JSON"),
    (b'{"peer_id": "x", "host_api": "1.0"}', "no valid peer id"),
    (b'{"peer_id": "' + b"a" * 52 + b'", "host_api": "1.0", "codecs": "json"}',
     "'codecs' is not a list of strings"),
])
def test_bad_hellos_say_what_is_wrong(body: bytes, message: str) -> None:
    with pytest.raises(HandshakeError, match=message):
        Hello.from_envelope(Envelope(Kind.HELLO, 0, "", body))


@given(kind=st.sampled_from([Kind.MESSAGE, Kind.REQUEST]), message_id=st.integers(0, 2**64 - 1),
       deadline=st.integers(0, 2**64 - 1), topic=st.text(max_size=60), body=st.binary())
def test_the_senders_cached_header_makes_the_same_bytes(
    kind: Kind, message_id: int, deadline: int, topic: str, body: bytes
) -> None:
    from p2phost._runtime.wire._envelope import IDS, encode, header_parts

    # As Outgoing.frame joins them (inline there: no call per message).
    head, tail = header_parts(kind, topic.encode())
    assert head + IDS.pack(message_id, 0, deadline) + tail + body == encode(
        kind, message_id, topic.encode(), body, deadline=deadline)


@given(kind=st.sampled_from([Kind.REPLY, Kind.ERROR]), message_id=st.integers(0, 2**64 - 1),
       correlation_id=st.integers(0, 2**64 - 1), body=st.binary())
def test_the_answers_one_pack_makes_the_same_bytes(
    kind: Kind, message_id: int, correlation_id: int, body: bytes
) -> None:
    from p2phost._runtime.wire._envelope import ANSWER, VERSION, encode

    assert ANSWER.pack(VERSION, kind, message_id, correlation_id) + body == encode(
        kind, message_id, body=body, correlation_id=correlation_id)
