"""The node's own account of its JetStream inbox, for counting what expired unread.

The server removes what passed a stream's ``max_age`` without counting it, and once it
has, forgets that a removed message had been delivered (the consumer's ack floor moves
past it). So what left the stream is split here, in the key-value bucket
:data:`COUNTS_BUCKET`: ``NAME.acked``, the records the node acknowledged (written by the
node only, after each batch of acks) and ``NAME.purged``, the records ``inbox purge``
removed. Whatever else left the stream (its last sequence minus what it holds) expired
unread.
"""

from __future__ import annotations

import contextlib

from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import StorageType
from nats.js.errors import BucketNotFoundError, KeyNotFoundError
from nats.js.kv import KeyValue

#: The key-value bucket of the inboxes' own accounts (``NAME.acked``, ``NAME.purged``).
COUNTS_BUCKET = "p2phost-inbox-counts"
_SEEN = 65_536  # stream sequences acknowledged this run, remembered against redeliveries


class Accounts:
    """The accounts of every inbox on one NATS server, and this node's acks."""

    def __init__(self, js: JetStreamContext) -> None:
        self._js = js
        self._kv: KeyValue | None = None
        #: Records of this node's inbox it acknowledged, over every run (``NAME.acked``).
        self.acked = 0
        self._acked_sent = 0
        self._seen: dict[int, None] = {}

    async def _bucket(self) -> KeyValue:
        if self._kv is None:
            try:
                self._kv = await self._js.key_value(COUNTS_BUCKET)
            except BucketNotFoundError:
                # Two first users at once: the server answers both with the same bucket.
                self._kv = await self._js.create_key_value(bucket=COUNTS_BUCKET, history=1,
                                                           storage=StorageType.FILE)
        return self._kv

    async def get(self, name: str, key: str) -> int:
        """The count ``key`` (``acked``, ``purged``) of inbox ``name`` (0: none yet)."""
        try:
            entry = await (await self._bucket()).get(f"{name}.{key}")
        except (KeyNotFoundError, BucketNotFoundError):
            return 0
        return int(entry.value or b"0")

    async def put(self, name: str, key: str, value: int) -> None:
        """Set the count ``key`` of inbox ``name``."""
        await (await self._bucket()).put(f"{name}.{key}", str(value).encode())

    async def forget(self, name: str) -> None:
        """Drop inbox ``name``'s counts (it was deleted)."""
        with contextlib.suppress(NatsError, KeyNotFoundError, BucketNotFoundError):
            for key in ("acked", "purged"):
                await (await self._bucket()).delete(f"{name}.{key}")

    def start(self, acked: int) -> None:
        """This node's inbox has ``acked`` acknowledged so far (as written)."""
        self.acked = self._acked_sent = acked

    def note_acked(self, message: Msg) -> None:
        """``message`` was acknowledged. A record redelivered (its ack deadline passed
        while a handler ran) is acked again: each stream sequence counts once."""
        try:
            seq = message.metadata.sequence.stream
        except (ValueError, IndexError, AttributeError):
            return
        if seq in self._seen:
            return
        self._seen[seq] = None
        if len(self._seen) > _SEEN:
            del self._seen[next(iter(self._seen))]
        self.acked += 1

    async def write_acked(self, name: str) -> None:
        """Write this node's ``acked`` count if it changed."""
        if self.acked != self._acked_sent:
            self._acked_sent = self.acked
            await self.put(name, "acked", self.acked)
