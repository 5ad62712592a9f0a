"""Records read from this node's inbox, each taken where it belongs.

A record of an open connection goes to that connection; an OPEN opens one (while the
node listens); a record of a connection the journal knows resumes it after a restart;
a LETTER goes to the node's letter handler; a record of an unknown connection is
answered with RESET, and one that is not p2phost's is counted and dropped.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from .._errors import ForeignRecord, TransportError
from .._peer_ids import is_peer_id
from .._ratelog import RateLimitedLog
from ._connection import InboxConnection
from ._journal import Resumable
from ._letters import Letter, letter_finisher
from ._record import HEADER, MAGIC, VERSION, Record, RecordType, Unread, decode, valid_inbox
from ._sending import announced_window

if TYPE_CHECKING:
    from ._endpoint import Endpoint

log = logging.getLogger("p2phost.transport")
_SENDERS_KNOWN = 1024  # (sender, inbox) fields checked once, then forgotten all at once
_DATA, _FROM_DIALLER = int(RecordType.DATA), 1
_HEAD, _unpack = HEADER.size, HEADER.unpack_from


class Router:
    """Takes each record of one endpoint's inbox where it belongs."""

    def __init__(self, endpoint: Endpoint) -> None:
        self._endpoint = endpoint
        #: Connections the journal knows from an earlier run, by connection id.
        self.resumable: dict[bytes, Resumable] = {}
        self._reset: OrderedDict[bytes, None] = OrderedDict()
        self._foreign = RateLimitedLog(log, "foreign messages", burst=1)
        #: The raw sender and inbox fields of records whose names were found valid.
        self._senders: set[bytes] = set()

    async def deliver(self, data: bytes, token: Any) -> None:
        """The medium's :data:`~._medium.Deliver` callback for the endpoint's inbox."""
        if not self.take(data, token):
            await self._route(data, token)

    def take(self, data: bytes, token: Any) -> bool:
        """The common record, a connection's next DATA frame, taken without a
        :class:`Record` (every message over a broker comes this way); False for any
        other, which :meth:`deliver` takes."""
        if data[:4] != MAGIC or len(data) < _HEAD:
            return False
        _, version, kind, flags, connection_id, epoch, seq, ls, li = _unpack(data)
        end = _HEAD + ls + li
        if kind != _DATA or version != VERSION or end > len(data) \
                or data[_HEAD:end] not in self._senders:
            return False
        connection = self._endpoint.connections.get((connection_id, not flags & _FROM_DIALLER))
        return connection is not None and connection.take_data(epoch, seq, data[end:], token)

    def too_large(self, head: bytes, size: int, token: Any) -> None:
        """The medium's :data:`~._medium.TooLarge` callback: a DATA record of ``size``
        bytes it did not read (``head``: its first bytes) goes to its connection with an
        :class:`Unread` payload, refused there in order; anything else is dropped."""
        endpoint = self._endpoint
        try:
            record = decode(head)
        except ForeignRecord as exc:
            self._ignore_foreign(exc)
            endpoint.ack([token])
            return
        connection = endpoint.connections.get((record.connection, not record.from_dialler))
        if connection is None or record.type is not RecordType.DATA \
                or not is_peer_id(record.sender):
            endpoint.ack([token])
            return
        record.payload = Unread(size - (len(head) - len(record.payload)))
        connection.receive(record, token)

    async def _route(self, data: bytes, token: Any) -> None:
        endpoint = self._endpoint
        try:
            record = decode(data)
            if not is_peer_id(record.sender) or (record.inbox and not valid_inbox(record.inbox)):
                raise ForeignRecord(f"sender {record.sender[:60]!r} or its inbox "
                                    f"{record.inbox[:60]!r} is not valid")
        except ForeignRecord as exc:
            self._ignore_foreign(exc)
            endpoint.ack([token])
            return
        if len(self._senders) >= _SENDERS_KNOWN:
            self._senders.clear()
        self._senders.add(data[_HEAD:_HEAD + len(record.sender) + len(record.inbox)])
        if record.type is RecordType.LETTER:
            await self._letter(record, token)
            return
        key = (record.connection, not record.from_dialler)
        connection = endpoint.connections.get(key)
        if connection is not None:
            connection.receive(record, token)
            return
        closing = endpoint.closing.get(key)
        if closing is not None and closing.let_copy_go(record, [token]):
            return
        kind = record.type
        if (record.from_dialler and kind in (RecordType.DATA, RecordType.CLOSE)
                and record.connection in self.resumable):
            self._resume(record, token)
            return
        endpoint.ack([token])
        if kind is RecordType.OPEN and record.from_dialler:
            self._open(record)
        elif kind in (RecordType.DATA, RecordType.ACCEPT, RecordType.REOPEN):
            # Never answer CLOSE, RESET, REFUSE or CREDIT: two sides that both forgot a
            # connection must not bounce records forever.
            self._answer(record, RecordType.RESET)

    async def _letter(self, record: Record, token: Any) -> None:
        endpoint = self._endpoint
        handler = endpoint.letters
        if handler is None:
            return  # not acknowledged: it waits for a run of the node that takes letters
        if endpoint.letter_journal.seen(record.sender, record.connection, record.seq):
            endpoint.letter_journal.count("copies")
            endpoint.ack([token])
            return
        letter = Letter(record.sender, None if record.no_reply else record.reply_inbox,
                        record.connection, record.seq, record.payload, endpoint.medium.url,
                        letter_finisher(endpoint.letter_journal, endpoint.ack, token))
        await handler(letter)

    def _ignore_foreign(self, exc: ForeignRecord) -> None:
        self._foreign.warning("ignored a foreign message on this node's inbox at %s: %s",
                              self._endpoint.address, exc)

    def _answer(self, record: Record, kind: RecordType, payload: bytes = b"") -> None:
        if kind is RecordType.RESET:
            if record.connection in self._reset:
                return  # once per connection is enough
            self._reset[record.connection] = None
            if len(self._reset) > 1024:
                self._reset.popitem(last=False)
        endpoint = self._endpoint
        answer = Record(kind, not record.from_dialler, record.connection, 0, 0,
                        endpoint.peer_id, payload, endpoint.inbox_field)
        endpoint.control_to(record.reply_inbox, answer.encode())

    def _open(self, record: Record) -> None:
        endpoint = self._endpoint
        if endpoint.accept is None:
            self._answer(record, RecordType.REFUSE,
                         b"the node does not listen on this medium (its listener is closed)")
            return
        deadline = int.from_bytes(record.payload[:8], "big") if len(record.payload) >= 8 else 0
        if deadline and deadline < time.time() * 1000:
            log.debug("ignoring an OPEN from %s whose dial deadline passed", record.sender)
            return
        connection = InboxConnection(endpoint, connection_id=record.connection, dialler=False,
                                     peer_id=record.sender, peer_inbox=record.reply_inbox,
                                     in_epoch=record.epoch,
                                     peer_window=announced_window(record.payload[8:]))
        endpoint.connections[(record.connection, False)] = connection
        endpoint.spawn(self._accepted(connection, connection.announce(RecordType.ACCEPT)),
                       "accept")

    def _resume(self, record: Record, token: Any) -> None:
        endpoint = self._endpoint
        entry = self.resumable.pop(record.connection)
        if endpoint.accept is None or entry.done.watermark < 1 or record.epoch != entry.epoch:
            endpoint.ack([token])
            if endpoint.journal is not None:
                endpoint.journal.closed(record.connection)
            self._answer(record, RecordType.RESET)
            return
        connection = InboxConnection(endpoint, connection_id=entry.connection, dialler=False,
                                     peer_id=entry.sender, peer_inbox=entry.inbox,
                                     in_epoch=entry.epoch, next_seq=entry.done.watermark + 1)
        connection.skip = set(entry.done.above)
        connection.resumed_run = True
        # The node's new run handshakes as on a new connection: it gets the dialler's
        # hello again, and its own hello is not sent (the dialler is past its handshake).
        connection.replay(entry.opening)
        connection.swallow_first_frame = True
        endpoint.connections[(entry.connection, False)] = connection
        if endpoint.journal is not None:
            endpoint.journal.opened(entry)
        log.info("resuming the connection from %s after a restart (from frame %d)",
                 connection.remote_address, entry.done.watermark + 1)
        connection.resumed()
        connection.receive(record, token)
        endpoint.spawn(self._accepted(connection, connection.announce(RecordType.REOPEN)),
                       "resume")

    async def _accepted(self, connection: InboxConnection, first: bytes) -> None:
        endpoint = self._endpoint
        try:
            async with connection.send_lock:
                await endpoint.append_to_peer(connection, [first])
        except TransportError as exc:
            log.warning("could not answer %s: %s", connection.remote_address, exc)
            connection.lost(str(exc))
            await connection.close()
            return
        accept = endpoint.accept
        if accept is None:
            await connection.close()
        else:
            await accept(connection)
