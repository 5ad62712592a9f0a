"""A node's presence on one medium: its inbox, and every connection that runs through it.

The endpoint reads the inbox (through the :class:`Medium`), routes each record to its
connection, opens connections for OPENs while listening, resumes connections after a
restart from the journal, answers records of unknown connections with RESET, and owns
the tasks that acknowledge records and send control records.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._aio import Backoff, TaskOwner, plugin_name, with_timeout
from .._errors import ConnectionClosed, TransportError
from .._identity import is_peer_id
from .._transport import AcceptHandler
from ._connection import InboxConnection
from ._journal import Journal, Resumable
from ._letters import Letter, LetterHandler, LetterJournal, letter_finisher
from ._medium import (
    Medium,
    MediumError,
    MediumUnavailable,
    Retention,
    UnknownInbox,
    stop_if_cancelled,
)
from ._record import OVERHEAD, ForeignRecord, Record, RecordType, decode, valid_inbox

log = logging.getLogger("p2phost.transport")
_ATTEMPT_TIMEOUT = 10.0
_CLOSE_TIMEOUT = 3.0
_FOREIGN_LOG_EVERY = 10.0


@dataclass(frozen=True)
class InboxOptions:
    """Tuning shared by every inbox transport (plugins expose some as config)."""

    #: Frames a sender may have on the medium beyond what the receiver has taken.
    window: int = 256
    #: Seconds ``listen`` keeps retrying a medium that is down before it gives up.
    connect_timeout: float = 10.0
    #: Seconds a send keeps retrying while the medium is unreachable.
    send_timeout: float = 30.0
    #: Seconds a missing frame may be awaited before the connection is given up.
    gap_timeout: float = 30.0
    #: What this node's inbox keeps at most (``max-age``, ``max-messages``, ``max-bytes``).
    retention: Retention = field(default_factory=Retention)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> InboxOptions:
        """Options from a plugin's ``[config.NAME]`` (keys ``window``, ``connect-timeout``,
        ``send-timeout``, ``gap-timeout``; missing ones keep their defaults)."""
        default = cls()
        return cls(
            window=int(config.get("window", default.window)),
            connect_timeout=float(config.get("connect-timeout", default.connect_timeout)),
            send_timeout=float(config.get("send-timeout", default.send_timeout)),
            gap_timeout=float(config.get("gap-timeout", default.gap_timeout)),
            retention=Retention(max_age=float(config.get("max-age", 0.0)),
                                max_messages=int(config.get("max-messages", 0)),
                                max_bytes=int(config.get("max-bytes", 0))),
        )


def backoff(attempt: int, initial: float = 0.1, maximum: float = 2.0) -> float:
    """Seconds to wait before retry ``attempt`` (0 = the first): doubling from
    ``initial`` up to ``maximum``, a random point in the upper half (no lockstep)."""
    return Backoff(initial, maximum).delay(attempt)


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
        self._resumable: dict[bytes, Resumable] = {}
        self._reset: OrderedDict[bytes, None] = OrderedDict()
        self._acks: list[Any] = []
        self._ack_wake = asyncio.Event()
        self._controls: list[tuple[str, bytes]] = []  # (inbox, record)
        self._control_wake = asyncio.Event()
        self._tasks = TaskOwner(f"inbox {medium.url}", logger=log)
        self._foreign = 0
        self._foreign_logged = 0.0
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
        """Send a control record (CREDIT) to the connection's peer, soon."""
        self._controls.append((connection.peer_inbox, record))
        self._control_wake.set()

    def remove(self, connection: InboxConnection) -> None:
        """The connection is closed: route no more records to it."""
        key = (connection.connection_id, connection.dialler)
        if self.connections.get(key) is connection:
            del self.connections[key]

    def forget(self, connection: InboxConnection) -> None:
        """The connection is closed and all its frames are done: drop it from the journal."""
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
                     stored: bool = False) -> None:
        """Append to ``inbox``, retrying for ``within`` seconds while the medium is
        unreachable (a record appended twice is dropped by its reader); ``stored``:
        records stored for the peer (its retention limits apply)."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + within
        attempt = 0
        while True:
            try:
                async with asyncio.timeout(min(_ATTEMPT_TIMEOUT, max(0.1, give_up - loop.time()))):
                    if stored:
                        await self.medium.store(inbox, records)
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
            try:
                async with asyncio.timeout(max(1.0, min(_ATTEMPT_TIMEOUT, give_up - loop.time()))):
                    await self.medium.connect()
                break
            except (MediumUnavailable, TimeoutError) as exc:
                delay = backoff(attempt)
                if loop.time() + delay >= give_up:
                    waited = f" (retried for {retry_for:g}s)" if retry_for else ""
                    raise MediumUnavailable(f"cannot reach {self.medium.url}{waited}: "
                                            f"{exc or 'no answer'}") from exc
                if attempt == 0:
                    log.warning("cannot reach %s (retrying for %gs): %s", self.medium.url,
                                retry_for, exc)
            await asyncio.sleep(delay)
            attempt += 1
        self._spawn(self._ack_loop(), "acks")
        self._spawn(self._control_loop(), "controls")
        self._spawn(self._watch_gaps(), "gaps")
        if self.reads:
            self.letter_journal.load()
            if self.inbox == self.peer_id:
                self.medium.retention = self.options.retention
            await with_timeout(self.medium.open_inbox(self.inbox, self._deliver),
                               _ATTEMPT_TIMEOUT, plugin=plugin_name(self.medium),
                               doing=f"opening its inbox on {self.medium.url}",
                               fix="check that the broker or database there answers")
            if self.medium.expired_at_open:
                self.letter_journal.count("expired", self.medium.expired_at_open)

    def listen(self, accept: AcceptHandler) -> None:
        """Accept connections from now on (and resume those the journal knows)."""
        self.accept = accept
        if self.ephemeral and self.journal is not None:
            self._resumable = self.journal.load()
        self.ephemeral = False

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
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
                    RecordType.OPEN, 0, deadline.to_bytes(8, "big"))], within=timeout)
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

    # -- reading the inbox -----------------------------------------------------------

    async def _deliver(self, data: bytes, token: Any) -> None:
        try:
            record = decode(data)
            if not is_peer_id(record.sender) or (record.inbox and not valid_inbox(record.inbox)):
                raise ForeignRecord(f"sender {record.sender[:60]!r} or its inbox "
                                    f"{record.inbox[:60]!r} is not valid")
        except ForeignRecord as exc:
            self._ignore_foreign(exc)
            self.ack([token])
            return
        if record.type is RecordType.LETTER:
            await self._letter(record, token)
            return
        connection = self.connections.get((record.connection, not record.from_dialler))
        if connection is not None:
            connection.receive(record, token)
            return
        kind = record.type
        if (record.from_dialler and kind in (RecordType.DATA, RecordType.CLOSE)
                and record.connection in self._resumable):
            self._resume(record, token)
            return
        self.ack([token])
        if kind is RecordType.OPEN and record.from_dialler:
            self._open(record)
        elif kind in (RecordType.DATA, RecordType.ACCEPT, RecordType.REOPEN):
            # Never answer CLOSE, RESET, REFUSE or CREDIT: two sides that both forgot a
            # connection must not bounce records forever.
            self._answer(record, RecordType.RESET)

    async def _letter(self, record: Record, token: Any) -> None:
        handler = self.letters
        if handler is None:
            return  # not acknowledged: it waits for a run of the node that takes letters
        if self.letter_journal.seen(record.sender, record.connection, record.seq):
            self.letter_journal.count("copies")
            self.ack([token])
            return
        letter = Letter(record.sender, None if record.no_reply else record.reply_inbox,
                        record.connection, record.seq, record.payload, self.medium.url,
                        letter_finisher(self.letter_journal, self.ack, token))
        await handler(letter)

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

    def _ignore_foreign(self, exc: ForeignRecord) -> None:
        self._foreign += 1
        now = time.monotonic()
        if now - self._foreign_logged >= _FOREIGN_LOG_EVERY:
            self._foreign_logged = now
            log.warning("ignored %d foreign message(s) on this node's inbox at %s: %s",
                        self._foreign, self.address, exc)
            self._foreign = 0

    def _answer(self, record: Record, kind: RecordType, payload: bytes = b"") -> None:
        if kind is RecordType.RESET:
            if record.connection in self._reset:
                return  # once per connection is enough
            self._reset[record.connection] = None
            if len(self._reset) > 1024:
                self._reset.popitem(last=False)
        answer = Record(kind, not record.from_dialler, record.connection, 0, 0, self.peer_id,
                        payload, self.inbox_field)
        self._controls.append((record.reply_inbox, answer.encode()))
        self._control_wake.set()

    def _open(self, record: Record) -> None:
        if self.accept is None:
            self._answer(record, RecordType.REFUSE,
                         b"the node does not listen on this medium (its listener is closed)")
            return
        deadline = int.from_bytes(record.payload[:8], "big") if len(record.payload) >= 8 else 0
        if deadline and deadline < time.time() * 1000:
            log.debug("ignoring an OPEN from %s whose dial deadline passed", record.sender)
            return
        connection = InboxConnection(self, connection_id=record.connection, dialler=False,
                                     peer_id=record.sender, peer_inbox=record.reply_inbox,
                                     in_epoch=record.epoch)
        self.connections[(record.connection, False)] = connection
        self._spawn(self._accepted(connection, connection.record(RecordType.ACCEPT)), "accept")

    def _resume(self, record: Record, token: Any) -> None:
        entry = self._resumable.pop(record.connection)
        if self.accept is None or entry.done.watermark < 1 or record.epoch != entry.epoch:
            self.ack([token])
            if self.journal is not None:
                self.journal.closed(record.connection)
            self._answer(record, RecordType.RESET)
            return
        connection = InboxConnection(self, connection_id=entry.connection, dialler=False,
                                     peer_id=entry.sender, peer_inbox=entry.inbox,
                                     in_epoch=entry.epoch, next_seq=entry.done.watermark + 1)
        connection.skip = set(entry.done.above)
        # The node's new run handshakes as on a new connection: it gets the dialler's
        # hello again, and its own hello is not sent (the dialler is past its handshake).
        connection.replay(entry.opening)
        connection.swallow_first_frame = True
        self.connections[(entry.connection, False)] = connection
        if self.journal is not None:
            self.journal.opened(entry)
        log.info("resuming the connection from %s after a restart (from frame %d)",
                 connection.remote_address, entry.done.watermark + 1)
        connection.receive(record, token)
        self._spawn(self._accepted(connection, connection.record(RecordType.REOPEN)), "resume")

    async def _accepted(self, connection: InboxConnection, first: bytes) -> None:
        try:
            async with connection.send_lock:
                await self.append_to_peer(connection, [first])
        except TransportError as exc:
            log.warning("could not answer %s: %s", connection.remote_address, exc)
            connection.lost(str(exc))
            await connection.close()
            return
        accept = self.accept
        if accept is None:
            await connection.close()
        else:
            await accept(connection)

    # -- background work -------------------------------------------------------------

    async def _ack_loop(self) -> None:
        while True:
            await self._ack_wake.wait()
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
                by_inbox: dict[str, list[bytes]] = {}
                for inbox, record in batch:
                    by_inbox.setdefault(inbox, []).append(record)
                for inbox, records in by_inbox.items():
                    try:
                        await self.append(inbox, records, within=self.options.send_timeout)
                    except TransportError as exc:
                        log.debug("a control record to inbox %s was not sent: %s", inbox, exc)
                    stop_if_cancelled()

    async def _watch_gaps(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            for connection in list(self.connections.values()):
                connection.check_gap(self.options.gap_timeout)
