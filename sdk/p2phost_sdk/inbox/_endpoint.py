"""A node's presence on one medium: its inbox, and every connection that runs through it.

The endpoint connects to the medium (through the :class:`Medium`), opens its inbox and
hands what it reads to its :class:`~._routing.Router`, dials, appends records (retrying
while the medium is unreachable), stores letters in peers' inboxes, and owns the tasks
that acknowledge records and send control records.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Coroutine, Sequence
from typing import Any

from .._aio import TaskOwner, plugin_name, with_timeout
from .._errors import (
    ConnectionClosed,
    MediumError,
    MediumUnavailable,
    TransportError,
    UnknownInbox,
)
from .._transport import AcceptHandler
from ._connection import InboxConnection
from ._journal import Journal, Resumable
from ._letters import LetterHandler, LetterJournal
from ._medium import Medium, stop_if_cancelled
from ._options import InboxOptions, backoff
from ._record import OVERHEAD, RecordType
from ._routing import Router
from ._sending import WINDOW

log = logging.getLogger("p2phost.transport")
_ATTEMPT_TIMEOUT = 10.0
_CLOSE_TIMEOUT = 3.0
_ACK_TURNS = 8  # loop turns the ack loop waits at most for a burst's acks to come in


class Endpoint:
    """This node's inbox on one medium and the connections through it."""

    def __init__(self, medium: Medium, *, peer_id: str, inbox: str, max_frame_size: int,
                 options: InboxOptions, journal: Journal | None,
                 letter_journal: LetterJournal | None = None, reads: bool = True) -> None:
        self.medium = medium
        self.peer_id = peer_id
        #: This node's inbox on the medium: its peer id when listening (peers find it
        #: by the address), a fresh name for a node that only dials (its replies).
        self.inbox = inbox
        #: The inbox as records name it: empty when it is the peer id.
        self.inbox_field = "" if inbox == peer_id else inbox
        self.max_frame_size = max_frame_size
        self.options = options
        self.window = options.window
        self.journal = journal
        self.address = self.address_of(peer_id)
        self.accept: AcceptHandler | None = None
        #: Whether the inbox goes away with the endpoint (a node that never listened).
        self.ephemeral = True
        #: Frames handed to the node and not yet done, over all connections.
        self.outstanding = 0
        self.connections: dict[tuple[bytes, bool], InboxConnection] = {}
        #: Closed connections whose frames the node still works on: copies of those
        #: frames go to them, not acknowledged at once (which would settle the frame).
        self.closing: dict[tuple[bytes, bool], InboxConnection] = {}
        self._router = Router(self)
        self._acks: list[Any] = []
        self._ack_wake = asyncio.Event()
        self._controls: list[tuple[str, bytes, bool]] = []  # (inbox, record, is a credit)
        self._reconnects = 0  # the medium's count when credits were last sent again
        self._control_wake = asyncio.Event()
        self._tasks = TaskOwner(f"inbox {medium.url}", logger=log)
        self._closed = False
        #: Whether the endpoint reads an inbox (False: a pure producer's, append only).
        self.reads = reads
        #: Where letters (stored records, outside connections) go; None: left unread
        #: on the medium until a node that takes them runs.
        self.letters: LetterHandler | None = None
        self.letter_journal = letter_journal or LetterJournal(None)
        self._known: set[str] = set()
        self._creating = asyncio.Lock()

    # -- what connections ask --------------------------------------------------------

    def address_of(self, peer_id: str) -> str:
        """The address of ``peer_id``'s inbox on this medium."""
        return f"{self.medium.url}#{peer_id}"

    @property
    def frame_limit(self) -> int:
        """The largest frame a connection carries: the node's limit or the medium's."""
        return min(self.max_frame_size, self.medium.max_record_size - OVERHEAD)

    @property
    def limit_reason(self) -> str:
        """Why ``frame_limit`` is what it is, for error messages."""
        if self.frame_limit < self.max_frame_size:
            return (f"(the largest message {self.medium.url} accepts is "
                    f"{self.medium.max_record_size} bytes, with {OVERHEAD} for the record "
                    "header)")
        return "(max-frame-size in [node] of p2phost.toml)"

    @property
    def acknowledges(self) -> bool:
        """Whether received frames are acknowledged (the medium redelivers otherwise)."""
        return self.medium.durable

    def ack(self, tokens: Sequence[Any]) -> None:
        """Acknowledge records on the medium (soon, in a batch)."""
        if self.medium.durable:
            self._acks.extend(tokens)
            self._ack_wake.set()

    def frame_done(self, connection: InboxConnection, seq: int, tokens: Sequence[Any]) -> None:
        """The node is done with frame ``seq``: journal it, then acknowledge it."""
        if self.journal is not None and not connection.dialler:
            self.journal.done(connection.connection_id, seq)
        self.ack(tokens)

    def opening_frame(self, connection: InboxConnection, frame: bytes) -> None:
        """The dialler's first frame arrived: keep it to resume after a restart."""
        if self.journal is not None and connection.in_epoch is not None:
            self.journal.opened(Resumable(connection.connection_id,
                                          connection.remote_peer_id or "",
                                          connection.peer_inbox, connection.in_epoch, frame))

    def control(self, connection: InboxConnection, record: bytes) -> None:
        """Send a CREDIT to the connection's peer, soon."""
        self._controls.append((connection.peer_inbox, record, True))
        self._control_wake.set()

    def control_to(self, inbox: str, record: bytes) -> None:
        """Send a control record (RESET, REFUSE) to ``inbox``, soon."""
        self._controls.append((inbox, record, False))
        self._control_wake.set()

    def remove(self, connection: InboxConnection) -> None:
        """The connection is closed: route no more records to it (but copies of the
        frames the node still works on, until :meth:`forget`)."""
        key = (connection.connection_id, connection.dialler)
        if self.connections.get(key) is connection:
            del self.connections[key]
            if connection.closed:
                self.closing[key] = connection

    def forget(self, connection: InboxConnection) -> None:
        """The connection is closed and all its frames are done: drop it from the journal."""
        key = (connection.connection_id, connection.dialler)
        if self.closing.get(key) is connection:
            del self.closing[key]
        if self.journal is not None and not connection.dialler:
            self.journal.closed(connection.connection_id)

    async def append_to_peer(self, connection: InboxConnection, records: list[bytes]) -> None:
        """Append a connection's records to its peer's inbox (retrying while unreachable)."""
        try:
            await self.append(connection.peer_inbox, records, within=self.options.send_timeout)
        except UnknownInbox:
            raise ConnectionClosed(f"{connection.remote_address} is gone: its inbox was "
                                   "removed (the node closed it)") from None

    async def append(self, inbox: str, records: list[bytes], *, within: float,
                     stored: bool = False, credits: bool = False) -> None:
        """Append to ``inbox``, retrying for ``within`` seconds while the medium is
        unreachable (a record appended twice is dropped by its reader); ``stored``:
        records stored for the peer (its retention limits apply); ``credits``: CREDIT
        records only (:meth:`Medium.append_credits`)."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + within
        attempt = 0
        while True:
            try:
                async with asyncio.timeout(min(_ATTEMPT_TIMEOUT, max(0.1, give_up - loop.time()))):
                    if stored:
                        await self.medium.store(inbox, records)
                    elif credits:
                        await self.medium.append_credits(inbox, records)
                    else:
                        await self.medium.append(inbox, records)
                stop_if_cancelled()
                return
            except (MediumUnavailable, TimeoutError) as exc:
                stop_if_cancelled()
                delay = backoff(attempt)
                if self._closed or loop.time() + delay >= give_up:
                    reason = str(exc) or "no answer"
                    raise ConnectionClosed(f"cannot reach {self.medium.url} (tried for "
                                           f"{within:g}s): {reason}") from exc
                if attempt == 0:
                    log.warning("cannot reach %s (retrying): %s", self.medium.url, exc)
            await asyncio.sleep(delay)
            attempt += 1

    # -- lifetime --------------------------------------------------------------------

    async def start(self, *, retry_for: float) -> None:
        """Connect (retrying for ``retry_for`` seconds while the medium is down), read
        the journal, open the inbox, and start the endpoint's tasks."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + retry_for
        attempt = 0
        while True:
            # A single attempt (retry_for 0: a dial, bounded by its own timeout) gets the
            # whole attempt time: a broker's handshake on a loaded machine takes seconds,
            # and cutting it at 1 s made a reachable broker look unreachable.
            bound = _ATTEMPT_TIMEOUT if not retry_for else max(
                1.0, min(_ATTEMPT_TIMEOUT, give_up - loop.time()))
            try:
                async with asyncio.timeout(bound):
                    await self.medium.connect()
                break
            except (MediumUnavailable, TimeoutError) as exc:
                delay = backoff(attempt)
                if loop.time() + delay >= give_up:
                    waited = f" (retried for {retry_for:g}s)" if retry_for else ""
                    raise MediumUnavailable(f"cannot reach {self.medium.url}{waited}: "
                                            f"{str(exc) or f'no answer within {bound:g}s'}"
                                            ) from exc
                if attempt == 0:
                    log.warning("cannot reach %s (retrying for %gs): %s", self.medium.url,
                                retry_for, exc)
            await asyncio.sleep(delay)
            attempt += 1
        self.spawn(self._ack_loop(), "acks")
        self.spawn(self._control_loop(), "controls")
        self.spawn(self._watch_gaps(), "gaps")
        if self.reads:
            self.letter_journal.load()
            if self.inbox == self.peer_id:
                self.medium.retention = self.options.retention
            self.medium.max_read_size = self.max_frame_size + OVERHEAD
            self.medium.too_large = self._router.too_large
            await with_timeout(self.medium.open_inbox(self.inbox, self._router.deliver),
                               _ATTEMPT_TIMEOUT, plugin=plugin_name(self.medium),
                               doing=f"opening its inbox on {self.medium.url}",
                               fix="check that the broker or database there answers")
            if self.medium.expired_at_open:
                self.letter_journal.count("expired", self.medium.expired_at_open)

    def listen(self, accept: AcceptHandler) -> None:
        """Accept connections from now on (and resume those the journal knows)."""
        self.accept = accept
        if self.ephemeral and self.journal is not None:
            self._router.resumable = self.journal.load()
        self.ephemeral = False

    def spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``work`` in a task the endpoint owns (cancelled when it closes)."""
        self._tasks.spawn(work, f"{name} {self.medium.url}")

    async def close(self) -> None:
        """Give up every connection, flush acknowledgements, disconnect. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.accept = None
        for connection in list(self.connections.values()):
            connection.lost(f"the transport for {self.medium.url} is closing")
        await self._tasks.close(_CLOSE_TIMEOUT)
        # Short waits from here on: the medium may be the reason the node is stopping.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_CLOSE_TIMEOUT):
                await self._flush_acks()
        # A listening inbox is durable: it stays across clean stops and crashes, and
        # holds what is stored for the node until it runs again (only `p2phost inbox
        # delete` or its retention removes it). A short-lived reply inbox goes.
        delete = self.ephemeral and self.reads
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT):
                await self.medium.close(delete_inbox=delete)
        except (MediumError, TimeoutError) as exc:
            log.warning("closing %s: %s", self.medium.url, exc)
        if self.journal is not None:
            self.journal.close()
        self.letter_journal.close()

    # -- dialling --------------------------------------------------------------------

    async def dial(self, peer_id: str, timeout: float) -> InboxConnection:
        """Open a connection to ``peer_id``'s inbox within ``timeout`` seconds."""
        connection = InboxConnection(self, connection_id=secrets.token_bytes(16),
                                     dialler=True, peer_id=peer_id, peer_inbox=peer_id)
        self.connections[(connection.connection_id, True)] = connection
        started = time.monotonic()
        deadline = int((time.time() + timeout) * 1000)
        try:
            async with asyncio.timeout(timeout):
                known = await self.medium.probe(peer_id)
            if known is False:
                raise UnknownInbox(peer_id)
            async with connection.send_lock:
                await self.append(peer_id, [connection.record(
                    RecordType.OPEN, 0, deadline.to_bytes(8, "big") + WINDOW.pack(self.window))],
                    within=timeout)
            await connection.wait_accepted(max(0.0, timeout - (time.monotonic() - started)))
        except UnknownInbox:
            self.remove(connection)
            raise TransportError(
                f"cannot reach {self.address_of(peer_id)}: no node with that peer id has an "
                f"inbox on {self.medium.url} (check the address: `p2phost run` of that node "
                "prints it)") from None
        except TimeoutError:
            self.remove(connection)
            raise TransportError(f"cannot reach {self.address_of(peer_id)}: no answer from "
                                 f"{self.medium.url} within {timeout:g}s") from None
        except BaseException:
            self.remove(connection)
            raise
        return connection

    async def post(self, peer_inbox: str, record: bytes, *, create: bool) -> None:
        """Append a letter to ``peer_inbox``, creating the inbox when ``create`` and it
        does not exist yet (a peer that never ran); retries for ``send-timeout``."""
        if create and self.medium.cannot_store:
            raise TransportError(self.medium.cannot_store)
        if create and peer_inbox not in self._known:
            # Media whose appends cannot tell (MQTT) say here whether the inbox exists;
            # one at a time, so concurrent first sends create it once.
            async with self._creating:
                if peer_inbox not in self._known:
                    try:
                        async with asyncio.timeout(_ATTEMPT_TIMEOUT):
                            if await self.medium.probe(peer_inbox) is False:
                                await self.medium.create_inbox(peer_inbox)
                    except TimeoutError:
                        raise TransportError(f"cannot reach {self.medium.url}: no answer "
                                             f"within {_ATTEMPT_TIMEOUT:g}s") from None
                    if len(self._known) > 4096:
                        self._known.clear()
                    self._known.add(peer_inbox)
        try:
            await self.append(peer_inbox, [record], within=self.options.send_timeout,
                              stored=True)
            return
        except UnknownInbox:
            if not create:
                raise
        try:
            async with self._creating, asyncio.timeout(_ATTEMPT_TIMEOUT):
                await self.medium.create_inbox(peer_inbox)
        except TimeoutError:
            raise TransportError(f"cannot reach {self.medium.url}: creating the inbox of "
                                 f"{peer_inbox} got no answer") from None
        await self.append(peer_inbox, [record], within=self.options.send_timeout, stored=True)

    # -- background work -------------------------------------------------------------

    async def _ack_loop(self) -> None:
        while True:
            await self._ack_wake.wait()
            # The node finishes a burst over a few loop turns (its mailbox hands over
            # every so many messages): wait while acks keep coming, a turn at a time,
            # so the burst is acknowledged in one call rather than one per turn.
            for _ in range(_ACK_TURNS):
                waiting = len(self._acks)
                await asyncio.sleep(0)
                if len(self._acks) == waiting:
                    break
            self._ack_wake.clear()
            await self._flush_acks()

    async def _flush_acks(self) -> None:
        while self._acks:
            batch, self._acks = [t for t in self._acks if t is not None], []
            if not batch:
                continue
            try:
                async with asyncio.timeout(_ATTEMPT_TIMEOUT):
                    await self.medium.ack(self.inbox, batch)
            except (MediumError, TimeoutError) as exc:
                # Not lost: the medium redelivers, and the journal or the connection
                # drops the copy.
                log.debug("acknowledging %d records on %s failed: %s", len(batch),
                          self.medium.url, exc)
            stop_if_cancelled()

    async def _control_loop(self) -> None:
        while True:
            await self._control_wake.wait()
            self._control_wake.clear()
            while self._controls:
                batch, self._controls = self._controls, []
                by_inbox: dict[tuple[str, bool], list[bytes]] = {}
                for inbox, record, credit in batch:
                    by_inbox.setdefault((inbox, credit), []).append(record)
                for (inbox, credit), records in by_inbox.items():
                    try:
                        await self.append(inbox, records, within=self.options.send_timeout,
                                          credits=credit)
                    except TransportError as exc:
                        log.debug("a control record to inbox %s was not sent: %s", inbox, exc)
                    stop_if_cancelled()

    async def _watch_gaps(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            again, self._reconnects = (self.medium.reconnects != self._reconnects,
                                       self.medium.reconnects)
            for connection in list(self.connections.values()):
                connection.check_gap(self.options.gap_timeout)
                if again:  # the medium may have lost credits it had taken: send them again
                    connection.credit_again()
