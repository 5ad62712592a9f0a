"""A test app whose record survives SIGKILL: each handled note is one line written with
one unbuffered ``os.write`` before the handler returns (and an ``entry`` of an
acknowledged topic is also recorded in the app's store, committed with its outcome).
It also sends bursts, publishes and asks other nodes on request, so tests can drive a
node from the command line."""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

from p2phost_sdk import App, Message, Messenger, handler, hookimpl


class Ledger(App):
    name = "ledger"

    def __init__(self, path: str, delay: float, hold_after: int = 0) -> None:
        self.path, self.delay, self.hold_after = path, delay, hold_after
        self.handled = 0
        self.fd = -1
        self.node: Messenger | None = None

    async def start(self, node: Messenger) -> None:
        self.node = node
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    async def stop(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    @handler("note")
    async def note(self, message: Message) -> None:
        if self.hold_after and self.handled >= self.hold_after:
            # Held unfinished until the node stops: a test kills a node that holds
            # letters as a state it waits for, not a race against the delay.
            await asyncio.Event().wait()
        self.handled += 1
        started = time.time()
        if self.delay:
            await asyncio.sleep(self.delay)
        # When the handler started and ended (wall clock): tests check that one peer's
        # notes never overlap, and time what follows from when they were handled.
        line = json.dumps({"from": message.sender, "id": message.id, "body": message.body,
                           "topic": message.topic, "started": started, "ended": time.time()})
        os.write(self.fd, (line + "\n").encode())

    @handler("entry")
    async def entry(self, message: Message) -> None:
        """As ``note``: a second topic, for a second delivery mode. On an acknowledged
        topic it also records the message in ``message.store`` (key ``entry-K``, K
        counting from 0 in ``entries``), committed with its outcome: an exact ledger."""
        store = message.store
        if store is not None:
            count = int(store.get("entries", 0))
            store.put("entries", count + 1)
            store.put(f"entry-{count}", {"from": message.sender, "body": message.body})
        await self.note(message)

    @handler("burst")
    async def burst(self, message: Message) -> int:
        """Send ``count`` notes ``{"n": i}`` (with ``"tag"`` and a ``"pad"`` string of
        that many bytes if the body has them) to ``to`` (a peer id or an address)."""
        assert self.node is not None
        to, count = message.body["to"], int(message.body["count"])
        extra = {k: message.body[k] for k in ("tag",) if k in message.body}
        if "pad" in message.body:
            extra["pad"] = "x" * int(message.body["pad"])
        for n in range(count):
            await self.node.send(to, "note", {**extra, "n": n})
        return count

    @handler("announce")
    async def announce(self, message: Message) -> int:
        """Publish ``body`` on ``topic``; the answer is how many peers it went to."""
        assert self.node is not None
        return await self.node.publish(message.body["topic"], message.body["body"])

    @handler("ask")
    async def ask(self, message: Message) -> Any:
        """Make a request to ``to`` on ``topic`` and answer with its reply."""
        assert self.node is not None
        return await self.node.request(message.body["to"], message.body["topic"],
                                       message.body["body"], timeout=10.0)


@hookimpl
def p2phost_apps(context: Any) -> list[App]:
    return [Ledger(str(context.config["path"]), float(context.config["delay"]),
                   int(context.config["hold-after"]))]
