"""App-level authorisation: a handler's allow= lets only the peers it names call it."""

from __future__ import annotations

import pytest

from p2phost_sdk import App, Identity, Message, RemoteError, allow, handler, permission_of

from .conftest import MakeNode, eventually

FRIEND = Identity.generate()
ADMINS: set[str] = set()


class Guarded(App):
    name = "guarded"

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    @handler("admin", allow=[FRIEND.peer_id])
    async def admin(self, message: Message) -> str:
        self.calls.append(("admin", message.sender))
        return "done"

    @allow(lambda peer: peer in ADMINS)
    @handler("report")
    async def report(self, message: Message) -> None:
        self.calls.append(("report", message.sender))

    @handler("broken", allow=lambda peer: 1 / 0 == 0)
    async def broken(self, message: Message) -> str:
        return "never"

    @handler("public")
    async def public(self, message: Message) -> str:
        return "anyone"


def test_allow_takes_peer_ids_or_a_predicate_but_not_one_string() -> None:
    assert permission_of(Guarded.admin) is not None
    assert permission_of(Guarded.public) is None
    check = permission_of(Guarded.admin)
    assert check is not None and check(FRIEND.peer_id) and not check("someone")
    with pytest.raises(TypeError, match="not one string"):
        allow(FRIEND.peer_id)


async def test_only_allowed_peers_reach_a_guarded_topic(
        make_node: MakeNode, security: str, caplog: pytest.LogCaptureFixture) -> None:
    app = Guarded()
    server = await make_node(security, [app])
    friend = await make_node(security, identity=FRIEND, listen=False)
    stranger = await make_node(security, listen=False)
    address = server.addresses[0]
    assert await friend.request(address, "admin", {}) == "done"
    assert await stranger.request(address, "public", {}) == "anyone"

    with pytest.raises(RemoteError, match="is not allowed to call topic 'admin'"):
        await stranger.request(address, "admin", {})
    with pytest.raises(RemoteError, match="is not allowed to call topic 'broken'"):
        await friend.request(address, "broken", {})
    assert "allow= predicate failed" in caplog.text

    # A predicate is asked at every call: it sees the app's current state.
    await stranger.send(address, "report", {})
    refused = f"dropping messages from {stranger.peer_id}: peer {stranger.peer_id} is not " \
              "allowed to call topic 'report'"
    await eventually(lambda: refused in caplog.text)
    ADMINS.add(stranger.peer_id)
    try:
        await stranger.send(address, "report", {"second": True})
        await eventually(lambda: ("report", stranger.peer_id) in app.calls)
    finally:
        ADMINS.discard(stranger.peer_id)
    assert app.calls == [("admin", FRIEND.peer_id), ("report", stranger.peer_id)]
    # The refused peer stays connected and is served on other topics.
    assert await stranger.request(address, "public", {}) == "anyone"
