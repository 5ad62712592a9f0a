"""An app's bounded mailbox: one queue and one worker per peer, one bound for all.

Items from one peer are processed in the order they arrived, one at a time, so an app's
per-peer state needs no locks; different peers are processed concurrently. An item
counts against the bound until it has been processed, and a producer that finds the
mailbox full waits for room (the node's reader for that connection then stops reading,
which slows the sender through the transport): nothing is dropped.

An item that finds its peer's queue empty is started at once, in the caller, up to its
first wait (most handlers never wait): a request is answered without waiting for the
worker's turn on the event loop. If it does wait, the peer's worker finishes it before
anything else of that peer, so the order and the one-at-a-time rule hold.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

T = TypeVar("T")
log = logging.getLogger("p2phost.node")


class _Started:
    """An item whose processing began in the caller and now waits on ``waiting_on``."""

    __slots__ = ("coro", "waiting_on")

    def __init__(self, coro: Coroutine[Any, Any, None], waiting_on: Any) -> None:
        self.coro, self.waiting_on = coro, waiting_on

    async def finish(self) -> None:
        """Drive the coroutine to its end, as a task would have."""
        coro, waiting_on = self.coro, self.waiting_on
        try:
            while True:
                try:
                    if isinstance(waiting_on, asyncio.Future):
                        await asyncio.wait((waiting_on,))
                    else:  # a bare yield (asyncio.sleep(0)): one turn of the loop
                        await asyncio.sleep(0)
                except asyncio.CancelledError as exc:
                    waiting_on = coro.throw(exc)  # the coroutine decides what to do
                    continue
                waiting_on = coro.send(None)
        except StopIteration:
            return


class _PeerQueue(Generic[T]):
    __slots__ = ("gone", "idle", "items", "task")

    def __init__(self) -> None:
        self.items: deque[T | _Started] = deque()
        self.idle: asyncio.Future[None] | None = None
        self.gone = False
        self.task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        idle = self.idle
        if idle is not None and not idle.done():
            idle.set_result(None)


class Mailbox(Generic[T]):
    """Bounded per-app mailbox; ``process(peer, item)`` is called for each item in turn."""

    def __init__(self, name: str, size: int,
                 process: Callable[[str, T], Coroutine[Any, Any, None]]) -> None:
        if size < 1:
            raise ValueError(f"mailbox of {name!r}: size must be at least 1, got {size}")
        self.name = name
        self.size = size
        self._process = process
        self._queues: dict[str, _PeerQueue[T]] = {}
        self._count = 0
        self._room: deque[asyncio.Future[None]] = deque()
        self._closing = False
        self._closed = False

    def __len__(self) -> int:
        """Items queued or being processed."""
        return self._count

    def try_put(self, peer: str, item: T) -> bool:
        """Queue ``item`` unless the mailbox is full (then the caller should ``put``)."""
        if self._count >= self.size:
            return False
        self._append(peer, item)
        return True

    async def put(self, peer: str, item: T) -> None:
        """Queue ``item``, waiting while the mailbox is full."""
        while self._count >= self.size:
            waiter = asyncio.get_running_loop().create_future()
            self._room.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                # Pass our turn on: the room we were woken for must not go unused.
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()
                raise
        self._append(peer, item)

    def put_nowait(self, peer: str, item: T) -> None:
        """Queue ``item`` even when full: for the few lifecycle events per connection."""
        self._append(peer, item)

    def _append(self, peer: str, item: T) -> None:
        if self._closed:
            log.debug("mailbox %s is closed: dropping an item from %s", self.name, peer)
            return
        queue = self._queues.get(peer)
        if queue is None:
            queue = self._queues[peer] = _PeerQueue()
            queue.task = asyncio.get_running_loop().create_task(
                self._work(peer, queue), name=f"mailbox {self.name} <- {peer[:12]}"
            )
        queue.gone = False
        self._count += 1
        if queue.items:
            queue.items.append(item)
        else:
            started = self._start(peer, item)
            if started is None:
                self._processed()
                return
            queue.items.append(started)
        queue.wake()

    def _start(self, peer: str, item: T) -> _Started | None:
        coro = self._process(peer, item)
        try:
            return _Started(coro, coro.send(None))
        except StopIteration:
            return None
        except Exception:  # process handles handler errors; this is a bug guard
            log.exception("mailbox %s: processing a message from %s failed", self.name, peer)
            return None

    def _processed(self) -> None:
        self._count -= 1
        if self._room:
            self._wake_one()

    def peer_gone(self, peer: str) -> None:
        """The peer disconnected: its worker stops once its queue is drained."""
        queue = self._queues.get(peer)
        if queue is not None:
            queue.gone = True
            queue.wake()

    def _wake_one(self) -> None:
        while self._room:
            waiter = self._room.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def _work(self, peer: str, queue: _PeerQueue[T]) -> None:
        items, process = queue.items, self._process
        loop = asyncio.get_running_loop()
        try:
            while True:
                while items:
                    item = items[0]
                    try:
                        if type(item) is _Started:
                            await item.finish()
                        else:
                            await process(peer, item)  # type: ignore[arg-type]
                    except Exception:  # process handles handler errors; this is a bug guard
                        log.exception("mailbox %s: processing a message from %s failed",
                                      self.name, peer)
                    items.popleft()
                    self._processed()
                if queue.gone or self._closing:
                    return
                queue.idle = loop.create_future()
                await queue.idle
                queue.idle = None
        finally:
            if self._queues.get(peer) is queue:
                del self._queues[peer]
            if items:  # cancelled mid-drain: what was left no longer holds room
                self._count -= len(items)
                items.clear()
                for _ in range(len(self._room)):
                    self._wake_one()

    async def close(self, timeout: float) -> int:
        """Process what is queued (up to ``timeout`` seconds), then stop every worker.

        Items that arrive while closing are processed too; after ``close`` returns,
        new items are dropped. Returns how many items were left unprocessed.
        """
        self._closing = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._queues and loop.time() < deadline:
            tasks = [q.task for q in self._queues.values() if q.task is not None]
            for queue in self._queues.values():
                queue.wake()
            await asyncio.wait(tasks, timeout=deadline - loop.time())
        self._closed = True
        left = self._count
        tasks = [q.task for q in self._queues.values() if q.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return left
