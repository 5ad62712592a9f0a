"""An app's bounded mailbox: per-peer order, handlers in tasks of their own, two bounds.

Items from one peer are processed in the order they arrived, one at a time, so an app's
per-peer state needs no locks; different peers are processed concurrently. An item
counts against the bounds until it has been processed: the mailbox is full when it holds
``size`` items or more than ``max_bytes`` bytes (each item's ``_size``: a message's body
length, 0 for a lifecycle call), and a producer that finds it full waits for room (the
node's reader for that connection then takes no more messages, and stops reading once
what waits passes its limit, which slows the sender through the transport): nothing is
dropped. A mailbox holding nothing always takes an item, however
large (one message over ``max_bytes`` is delivered, not stuck), so it never holds more
than ``max_bytes`` plus one message.

Handlers run in tasks owned by the mailbox, never in the reader: ``asyncio.timeout``,
cancellation and context variables inside a handler behave as anywhere else in asyncio,
and nothing a handler does reaches the connection's reader. The first item of an idle
peer starts a task (on Python 3.12+ eagerly, up to its first wait in the same step, when
it was put from a task; never inside a transport's callback, where push-mode receive puts
items), which starts from a copy of the context the item was put in, with
:data:`serving_peer` set to the peer (what the handler starts, tasks and threads, carries
it: a handler that disconnects its own sender is told so).

The rule for the items queued behind it: a task that finishes an item runs the peer's
next queued item itself, in the same step, when that item could not tell the difference
from a fresh task, that is when the handler left

* every context variable as the task started with it (the task's context still equals
  the peer's context: a variable a handler sets never reaches the next handler),
* no cancellation pending or swallowed (``Task.cancelling()`` is 0, so an
  ``asyncio.timeout`` in the next handler counts from a clean task), and
* was not itself cancelled (its ``CancelledError`` ends the task; a ``CancelledError``
  out of a handler while its task is not being cancelled, ``Task.cancelling()`` 0, as
  from a future someone else cancelled, is that handler's failure: answered as an error).

Otherwise, and after every ``_INLINE`` items in a row (so one busy peer yields the loop
to the others), the task ends and the next item starts in a fresh task with a fresh copy
of the peer's context. A task per item costs about as much as a small handler on 3.11;
a burst from one peer now costs one task. What differs from a task per item: a handler's
``asyncio.current_task()`` may go on to run that peer's next handlers once it returns,
so cancel a handler's task only while that handler runs. ``close`` cancels the tasks
still running after its timeout, and waits for them.

A task whose peer has nothing more queued waits for the peer's next item (on a future
the next put sets) instead of ending, under the same rule, when that item is put in a
context equal to the peer's: a requester that sends one request at a time costs a
wake-up per request, not a new task and two context copies (where an item starts eagerly,
on 3.12+ from a reader task, the task ends as before: an eager start costs no loop turn,
a wake-up one). Up to ``_PARK`` tasks of a
mailbox wait so (past that the one idle longest ends), and one ends when its peer goes.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, Protocol, TypeVar

from .._loop import future_maker

T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)
log = logging.getLogger("p2phost.node")
_EAGER = sys.version_info >= (3, 12)
_time = time.time


#: Idle peer queues a mailbox keeps (a peer that sends again soon, as a requester does,
#: reuses its queue); past this many, an idle queue is dropped at once.
_KEEP_IDLE = 256
#: Items of one peer a task runs in a row before it hands over to a fresh task: a peer
#: whose handlers never wait lets the loop (other peers, the readers) run between runs.
_INLINE = 64
#: Tasks of a mailbox that may wait idle for their peer's next item (see the docstring).
_PARK = 64
#: The bytes of message bodies an app's mailbox holds before it counts as full, by
#: default (``App.mailbox_bytes``). Without it, the bound in messages alone let one peer
#: make a node hold ``mailbox_size`` times the largest frame (1,024 x 16 MiB) for a
#: handler that is stuck. 64 MiB is far above what a normal workload queues (a full
#: mailbox of 1,024 messages of 64 KiB), so only large messages meeting a slow handler
#: ever reach it; then the reader waits, as for a mailbox full of messages.
MAX_BYTES = 64 * 1024 * 1024
#: Given to an idle task instead of an item: end now.
_STOP: Any = object()


class Direct(Protocol[T_contra]):
    """A plain item's handler run by the mailbox's task itself, with no coroutine of
    ``process`` around it (the handler's coroutine is the only one per item).

    An item of type :attr:`simple` (the dispatcher's one-way message, as its own item:
    ``_received.Received``) needs neither :meth:`start` nor :meth:`finish`: the task
    runs ``await item._call(item)`` and counts ``item._tally.handled += 1`` itself, and
    a failure goes to :meth:`failed`. An item of type :attr:`asked` (a plain request:
    ``_received.Asked``) is run the same way, its result answered by :meth:`answer`.
    Every other item is the ``T`` the mailbox holds."""

    #: The type of the one-way items the mailbox's task runs itself.
    simple: type[Any]
    #: The type of the requests it runs itself: an item of this type whose ``_deadline``
    #: (ms since the epoch, 0 for none) has passed goes to :meth:`expired` instead;
    #: its result to :meth:`answer`.
    asked: type[Any]

    def start(self, item: T_contra) -> Awaitable[Any] | None:
        """The handler's awaitable for an item that needs nothing around it but
        :meth:`finish` (else None: ``process`` takes it)."""

    def finish(self, peer: str, item: T_contra, result: Any,
               error: Exception | asyncio.CancelledError | None) -> Awaitable[None] | None:
        """The started item's handler returned ``result``, or raised ``error`` (a
        ``CancelledError`` only when the task itself was not being cancelled); what
        to wait for before the next item, if anything (a reply waiting for room)."""

    def failed(self, peer: str, item: Any, error: Exception | asyncio.CancelledError
               ) -> Awaitable[None] | None:
        """A simple item's handler raised ``error`` (as for :meth:`finish`)."""

    def answer(self, peer: str, item: Any, result: Any) -> Awaitable[None] | None:
        """A simple request's handler returned ``result`` (as for :meth:`finish`)."""

    def expired(self, peer: str, item: Any) -> None:
        """A simple request's deadline passed before its handler could start."""


class _ProcessAll:
    """The :class:`Direct` of a mailbox whose processing is wrapped: no item is simple,
    and ``process`` takes every one (the mailbox's task tests no ``None`` per item)."""

    simple = asked = None

    def start(self, item: Any) -> None:
        """None for every item: ``process`` takes it."""
        return None


# (Only what the task reads is there: with no simple item and nothing started, the
# task never calls the rest.)
_PROCESS_ALL: Direct[Any] = _ProcessAll()  # type: ignore[assignment]


#: The peer whose message the running code handles, in a mailbox's task and in what it
#: starts (None elsewhere): a connection retired from there does not wait for that
#: peer's mailboxes, which wait for it (Dispatcher.settled).
serving_peer: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "p2phost_serving_peer", default=None)


class _PeerQueue(Generic[T]):
    __slots__ = ("base", "context", "eager", "gone", "items", "loop", "name", "new_future",
                 "task", "waiter")

    def __init__(self, name: str) -> None:
        self.name = name
        self.loop = asyncio.get_running_loop()
        #: ``loop.create_future``, or what it calls on asyncio's loop (one per idle wait).
        self.new_future = future_maker(self.loop)
        #: Waiting behind the running item.
        self.items: deque[T] = deque()
        #: The task processing this peer's current item, if any.
        self.task: asyncio.Task[None] | None = None
        #: The context the item that found the queue idle was put in: an item put in
        #: an equal one may run in the same task as the items before it.
        self.base = contextvars.Context()
        #: What each item's task starts from (a copy each): ``base`` as a task created
        #: there would have had it, with ``serving_peer`` set.
        self.context = self.base
        #: The peer disconnected: forget the queue once it is idle.
        self.gone = False
        #: Set while ``task`` waits idle for the peer's next item (it is given the item).
        self.waiter: asyncio.Future[T] | None = None
        #: Its task started eagerly (3.12+, put from a task): it never waits idle, as
        #: the next item's eager start costs no loop turn where a wake-up costs one.
        self.eager = False


class Sized(Protocol):
    """What a mailbox holds: anything with the bytes it keeps in memory, ``_size`` (a
    message's body length; 0 for what holds no body)."""

    _size: int


S = TypeVar("S", bound=Sized)


class Mailbox(Generic[S]):
    """Bounded per-app mailbox; ``process(peer, item)`` is called for each item in turn.

    Full at ``size`` items or past ``max_bytes`` bytes of items (their ``_size``)."""

    def __init__(self, name: str, size: int,
                 process: Callable[[str, S], Coroutine[Any, Any, None]],
                 direct: Direct[S] | None = None, max_bytes: int = MAX_BYTES) -> None:
        if size < 1:
            raise ValueError(f"mailbox of {name!r}: size must be at least 1, got {size}")
        if max_bytes < 1:
            raise ValueError(f"mailbox of {name!r}: max_bytes must be at least 1, got "
                             f"{max_bytes}")
        self.name = name
        self.size = size
        self.max_bytes = max_bytes
        self._low_water = size - max(1, size // 4)
        self._bytes_low_water = max_bytes - max_bytes // 4
        self._process = process
        #: Runs plain items without ``process`` (None once ``process`` is wrapped).
        self.direct = direct
        self._queues: dict[str, _PeerQueue[S]] = {}
        #: The queues whose task waits idle for the next item, longest idle first.
        self._idle: dict[str, _PeerQueue[S]] = {}
        self._count = 0
        #: The ``_size`` of the items counted in ``_count``.
        self._bytes = 0
        self._room: deque[asyncio.Future[None]] = deque()
        self._empty: asyncio.Event | None = None
        self._closed = False

    def __len__(self) -> int:
        """Items queued or being processed."""
        return self._count

    @property
    def running(self) -> int:
        """Items being processed now (one per peer at most)."""
        return sum(1 for q in self._queues.values() if q.task is not None and q.waiter is None)

    def try_put(self, peer: str, item: S) -> bool:
        """Queue ``item`` unless the mailbox is full (then the caller should ``put``)."""
        if self._count >= self.size or self._bytes > self.max_bytes:
            return False
        # The common cases, inline (_append's, with no call): a burst's item queues behind
        # the running one; a requester's next request goes to its idle task.
        queue = self._queues.get(peer)
        if queue is not None and queue.task is not None and not self._closed:
            waiter = queue.waiter
            if waiter is None:
                self._count += 1
                self._bytes += item._size
                queue.items.append(item)
                return True
            if not waiter.done() and contextvars.copy_context() == queue.base \
                    and not (_EAGER and asyncio.current_task(queue.loop) is not None):
                queue.waiter = None
                del self._idle[peer]
                self._count += 1
                self._bytes += item._size
                waiter.set_result(item)
                return True
        self._append(peer, item)
        return True

    async def put(self, peer: str, item: S) -> None:
        """Queue ``item``, waiting while the mailbox is full."""
        while (self._count >= self.size or self._bytes > self.max_bytes) \
                and not self._closed:
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

    def put_nowait(self, peer: str, item: S) -> None:
        """Queue ``item`` even when full: for the few lifecycle events per connection."""
        self._append(peer, item)

    def _append(self, peer: str, item: S) -> None:
        if self._closed:
            log.debug("mailbox %s is closed: dropping an item from %s", self.name, peer)
            return
        queue = self._queues.get(peer)
        if queue is None:
            queue = self._queues[peer] = _PeerQueue(f"mailbox {self.name} <- {peer[:12]}")
        self._count += 1
        self._bytes += item._size
        if queue.task is None:
            self._start(peer, queue, item)
        elif queue.waiter is not None:  # its task waits idle: hand the item over
            waiter = self._unidle(peer, queue)
            if not waiter.done() and contextvars.copy_context() == queue.base \
                    and not (_EAGER and asyncio.current_task(queue.loop) is not None):
                waiter.set_result(item)
                return
            # Put in another context (or where it can start eagerly), or that task was
            # cancelled: it ends, a fresh one starts from this item's context.
            if not waiter.done():
                waiter.set_result(_STOP)
            queue.task = None
            self._start(peer, queue, item)
        else:
            queue.items.append(item)

    def _start(self, peer: str, queue: _PeerQueue[S], item: S) -> None:
        # The peer's queue was empty: its item starts now (on 3.12+ eagerly, so a
        # handler that never waits is done before this returns; the items behind it
        # then start from _run, not eagerly, so a long queue never nests).
        coro = self._run(peer, queue, item)
        queue.base = contextvars.copy_context()
        queue.context = queue.base.copy()
        queue.context.run(serving_peer.set, peer)
        task: asyncio.Task[None]
        # Eagerly only from a task (a reader's): an item put from a transport's callback
        # (push-mode receive) must not run handler code inside that callback.
        queue.eager = _EAGER and asyncio.current_task(queue.loop) is not None
        if queue.eager:
            task = asyncio.Task(coro, loop=queue.loop,  # type: ignore[call-arg,unused-ignore]
                                name=queue.name, eager_start=True,
                                context=queue.context.copy())
        else:
            task = queue.loop.create_task(coro, name=queue.name,
                                          context=queue.context.copy())
        if not task.done():
            queue.task = task

    async def _run(self, peer: str, queue: _PeerQueue[S], item: S) -> None:
        # The items behind this one run here too while they could not tell (see the
        # module's docstring); the task that ends starts the next item itself (rather
        # than from a done callback, which costs a loop turn and a handle per item).
        items, process, context = queue.items, self._process, queue.context
        # (read once: the direct object only ever goes, when processing is wrapped)
        direct, new_future = self.direct or _PROCESS_ALL, queue.new_future
        simple_type, asked_type = direct.simple, direct.asked
        # Set here too: on 3.12+ the first item runs eagerly, before _start returns.
        # (With its loop: a lookup of the running loop is a system call, getpid, on Linux.)
        task = queue.task = asyncio.current_task(queue.loop)
        assert task is not None
        run = 0  # items in a row
        call: Any = None  # start's awaitable, or a simple item's handler's
        try:
            while True:
                counted = False
                try:
                    # A simple item (see Direct: a message as its own item) runs with no
                    # start or finish call: with no Work per message, 14 % of the server's
                    # instructions per one-way message, 4 % per request on uvloop
                    # (benchmarks/instructions.py --server).
                    # (Tests ordered for the one-way message, the commonest item.)
                    kind = type(item)
                    if kind is asked_type and (
                            deadline := item._deadline  # type: ignore[attr-defined]
                    ) and deadline < _time() * 1000:
                        direct.expired(peer, item)
                    elif (simple := kind is simple_type or kind is asked_type) \
                            or (call := direct.start(item)) is not None:
                        try:
                            if simple:  # (called in the try: an exception it raises before
                                # its first await is the handler's failure too, as in start)
                                call = item._call(item)  # type: ignore[attr-defined]
                            result = await call
                        except Exception as exc:
                            waiting = direct.failed(peer, item, exc) if simple \
                                else direct.finish(peer, item, None, exc)
                        except asyncio.CancelledError as exc:
                            # A future the handler awaited was cancelled by someone
                            # else, not this task: a failure to answer, not our end
                            # (a close or a lost peer cancels the task: that goes on).
                            if task.cancelling():
                                if kind is asked_type:  # never answered: a message its
                                    # handler keeps must not hold the channel (see Asked)
                                    item._channel = None  # type: ignore[attr-defined]
                                raise
                            waiting = direct.failed(peer, item, exc) if simple \
                                else direct.finish(peer, item, None, exc)
                        else:
                            if kind is simple_type:
                                item._tally.handled += 1  # type: ignore[attr-defined]
                                waiting = None
                            elif simple:
                                waiting = direct.answer(peer, item, result)
                            else:
                                waiting = direct.finish(peer, item, result, None)
                        if waiting is not None:
                            await waiting
                    else:
                        await process(peer, item)
                except Exception:  # process handles handler errors; this is a bug guard
                    log.exception("mailbox %s: processing a message from %s failed",
                                  self.name, peer)
                counted = True
                # _processed, inline: one call less per item.
                self._count -= 1
                self._bytes -= item._size
                if self._room or self._empty is not None:
                    self._made_room()
                run += 1
                if run == _INLINE or self._closed or task.cancelling() \
                        or contextvars.copy_context() != context:
                    break
                if not items:
                    if queue.gone or queue.eager:
                        break
                    # Idle: wait for the peer's next item (inline, not a coroutine of
                    # its own: one per request a requester sends).
                    if len(self._idle) >= _PARK:  # the longest idle gives its place up
                        self._stop_idle(next(iter(self._idle)))
                    waiter = queue.waiter = new_future()
                    self._idle[peer] = queue
                    try:
                        item = await waiter
                    except asyncio.CancelledError:
                        self._idle_cancelled(peer, queue, waiter)
                        raise
                    if item is _STOP:
                        break
                    run = 0  # it waited: the loop ran in between
                    # (and what runs the items may have been wrapped meanwhile)
                    process, direct = self._process, self.direct or _PROCESS_ALL
                    continue
                item = items.popleft()
        finally:
            if not counted:
                self._processed(item)
            if queue.task is task:  # (else a fresh task took over: see _append)
                queue.task = None
                if items and not self._closed:
                    queue.task = queue.loop.create_task(
                        self._run(peer, queue, items.popleft()), name=queue.name,
                        context=context.copy())
                else:
                    self._forget(peer, queue)

    def _idle_cancelled(self, peer: str, queue: _PeerQueue[S], waiter: asyncio.Future[S]
                        ) -> None:
        # The idle task was cancelled while it waited for the peer's next item.
        if queue.waiter is waiter:
            self._unidle(peer, queue)
        elif waiter.done() and not waiter.cancelled() and waiter.result() is not _STOP:
            # Cancelled with an item already handed over: it runs in a fresh task
            # (_run's finally starts one for the items queued).
            queue.items.appendleft(waiter.result())

    def _unidle(self, peer: str, queue: _PeerQueue[S]) -> asyncio.Future[S]:
        waiter, queue.waiter = queue.waiter, None
        assert waiter is not None
        del self._idle[peer]
        return waiter

    def _stop_idle(self, peer: str) -> None:
        waiter = self._unidle(peer, self._idle[peer])
        if not waiter.done():  # (done: its task was cancelled, and ends anyway)
            waiter.set_result(_STOP)

    def _forget(self, peer: str, queue: _PeerQueue[S]) -> None:
        if not queue.items and queue.task is None and self._queues.get(peer) is queue \
                and (queue.gone or len(self._queues) > _KEEP_IDLE):
            del self._queues[peer]

    def _processed(self, item: S) -> None:
        self._count -= 1
        self._bytes -= item._size
        self._made_room()

    def _made_room(self) -> None:
        # Producers waiting for room are woken once a quarter of the mailbox is free
        # (of its items and of its bytes), not at every item: a reader then takes a run
        # of frames per wake-up rather than one (a loop turn and a future each). One
        # woken when a bigger item took the room waits again (``put`` checks again).
        if self._room and self._count <= self._low_water \
                and self._bytes <= self._bytes_low_water:
            for _ in range(self.size - self._count):
                if not self._room:
                    break
                self._wake_one()
        if self._count == 0 and self._empty is not None:
            self._empty.set()

    def busy_with(self, peer: str) -> bool:
        """Whether ``peer``'s items wait or one is being processed."""
        queue = self._queues.get(peer)
        return queue is not None and (bool(queue.items)
                                      or (queue.task is not None and queue.waiter is None))

    def peer_gone(self, peer: str) -> None:
        """The peer disconnected: what it sent is still processed; its queue goes away
        once it is empty."""
        queue = self._queues.get(peer)
        if queue is not None:
            queue.gone = True
            if queue.waiter is not None:  # its idle task ends, then forgets the queue
                self._stop_idle(peer)
            self._forget(peer, queue)

    def _wake_one(self) -> None:
        while self._room:
            waiter = self._room.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def close(self, timeout: float) -> int:
        """Process what is queued (up to ``timeout`` seconds), then cancel what still runs.

        Items that arrive while closing are processed too; after ``close`` returns,
        new items are dropped. Returns how many items were left unprocessed.
        """
        if self._count:
            self._empty = asyncio.Event()
            try:
                async with asyncio.timeout(timeout):
                    await self._empty.wait()
            except TimeoutError:
                pass
        self._closed = True
        left = self._count
        for peer in list(self._idle):  # idle tasks end at once
            self._stop_idle(peer)
        tasks = [q.task for q in self._queues.values() if q.task is not None]
        for task in tasks:
            task.cancel()
        # A handler that swallows its cancellation gets one more bounded wait, then
        # is left to finish on its own (it can no longer start anything here).
        if tasks:
            await asyncio.wait(tasks, timeout=max(timeout, 1.0))
        for queue in self._queues.values():
            queue.items.clear()
        self._queues.clear()
        self._count = 0
        self._bytes = 0
        for waiter in self._room:
            if not waiter.done():
                waiter.set_result(None)
        self._room.clear()
        return left
