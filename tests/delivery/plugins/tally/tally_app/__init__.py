"""Test apps for acknowledged delivery.

``Tally`` keeps, in the node's durable store, how many times each tally message reached
its handler (committed with the message, so a count of 2 would be a duplicate); its
``flaky`` handler fails the first two attempts, and ``doomed`` fails until a file exists.
``Producer`` sends ``count`` tally messages with idempotency keys, all of them again
each time it starts: a producer killed and restarted duplicates nothing, because the
keys make a message sent twice one message (and the receiver's dedupe window drops
those it already took, across its own restarts too).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from p2phost_sdk import App, Delivery, Message, Messenger, handler, hookimpl

FLAKY = Delivery("at-least-once", immediate_retries=2, delayed_retries=0)
DOOMED = Delivery("at-least-once", immediate_retries=1, delayed_retries=2, retry_delay=0.2)


class Tally(App):
    name = "tally"

    def __init__(self, fixed: str) -> None:
        self.fixed = Path(fixed) if fixed else None

    @handler("tally", delivery="effectively-once")
    async def tally(self, message: Message) -> None:
        assert message.store is not None
        key = f"n/{message.body['seq']}"
        message.store.put(key, message.store.get(key, 0) + 1)

    @handler("flaky", delivery=FLAKY)
    async def flaky(self, message: Message) -> None:
        if message.attempt < 3:
            raise RuntimeError(f"flaky on purpose (attempt {message.attempt})")
        assert message.store is not None
        message.store.put(f"flaky/{message.id}", message.attempt)

    @handler("doomed", delivery=DOOMED)
    async def doomed(self, message: Message) -> None:
        if self.fixed is None or not self.fixed.exists():
            raise RuntimeError("doomed until the fix is in")
        assert message.store is not None
        message.store.put(f"doomed/{message.id}", message.body)

    @handler("loose")
    async def loose(self, message: Message) -> None:
        """An at-most-once topic, for comparison."""


class Producer(App):
    name = "producer"
    delivery = {"tally": "effectively-once"}

    def __init__(self, to: str, count: int) -> None:
        self.to, self.count = to, count
        self.task: asyncio.Task[None] | None = None

    async def start(self, node: Messenger) -> None:
        self.node = node
        self.task = asyncio.get_running_loop().create_task(self.produce())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    async def produce(self) -> None:
        try:
            for seq in range(self.count):
                await self.node.send(self.to, "tally", {"seq": seq}, key=f"tally-{seq}")
        except Exception:
            logging.getLogger("tally").exception("the producer failed")
            raise


@hookimpl
def p2phost_apps(context: Any) -> list[App]:
    apps: list[App] = [Tally(str(context.config["fixed"]))]
    if context.config["to"]:
        apps.append(Producer(str(context.config["to"]), int(context.config["count"])))
    return apps
