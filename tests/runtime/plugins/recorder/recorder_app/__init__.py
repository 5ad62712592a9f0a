"""A test app: records bodies per sender, in the order its handlers saw them."""

from __future__ import annotations

import asyncio
from typing import Any

from p2phost_sdk import App, Message, PeerInfo, handler, hookimpl


class Recorder(App):
    name = "recorder"

    def __init__(self, delay: float = 0.0, mailbox_size: int = 1024) -> None:
        self.delay = delay
        self.mailbox_size = mailbox_size  # type: ignore[misc]
        self.records: dict[str, list[Any]] = {}
        self.events: list[tuple[str, str]] = []
        self.busy: set[str] = set()
        self.overlaps = 0
        self.max_busy = 0

    def _record(self, message: Message) -> int:
        got = self.records.setdefault(message.sender, [])
        got.append(message.body)
        return len(got)

    @handler("record")
    async def record(self, message: Message) -> int:
        return self._record(message)

    @handler("slow")
    async def slow(self, message: Message) -> int:
        # Handlers of one peer must never overlap: count it if they do.
        if message.sender in self.busy:
            self.overlaps += 1
        self.busy.add(message.sender)
        self.max_busy = max(self.max_busy, len(self.busy))
        try:
            await asyncio.sleep(self.delay)
            return self._record(message)
        finally:
            self.busy.discard(message.sender)

    @handler("boom")
    async def boom(self, message: Message) -> None:
        raise RuntimeError(f"boom on purpose ({message.body!r})")

    @handler("records")
    async def all_records(self, message: Message) -> dict[str, Any]:
        return {"records": self.records, "overlaps": self.overlaps}

    @handler("count")
    async def count(self, message: Message) -> int:
        return len(self.records.get(message.sender, []))

    @handler("publish")
    async def publish_on_request(self, message: Message) -> int:
        return await self.node.publish(message.body["topic"], message.body["body"])

    async def on_peer_connected(self, peer: PeerInfo) -> None:
        self.events.append(("connected", peer.peer_id))

    async def on_peer_lost(self, peer: PeerInfo, reason: str) -> None:
        self.events.append(("lost", peer.peer_id))


@hookimpl
def p2phost_apps(context: Any) -> list[App]:
    return [Recorder(float(context.config["delay"]), int(context.config["mailbox-size"]))]
