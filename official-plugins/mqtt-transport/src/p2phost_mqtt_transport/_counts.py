"""Counting what waits in an absent node's MQTT session, so that a stored send is refused
before the broker would drop it.

An MQTT broker keeps a bounded queue per absent persistent session (Mosquitto:
``max_queued_messages``, 1,000 by default) and drops what passes it without telling the
publisher (its PUBACK says success). Nobody can ask the broker how full a session's queue
is, so the counts are kept beside it, as retained messages:

    p2phost/inboxes/NAME                      the inbox's marker: {"max-messages": L,
                                              "max-bytes": B, "max-age": A}
    p2phost/inbox-count/NAME/stored/SENDER    {"n": letters, "b": their bytes, ...}
                                              SENDER ever stored there (by SENDER)
    p2phost/inbox-count/NAME/taken            the same, for the letters the node ever
                                              took (by the node)

What waits is the sum of the stored counts minus the taken count, less what expired
(``_tally``); a sender refuses a store that would bring it past L letters or B bytes (of
records). A count written by an older version is a bare number of letters. One
:class:`Watch` per medium keeps the counts of the inboxes it stored to current (one
subscribed client).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Callable

import aiomqtt

from ._tally import Inbox, Tally, parse

log = logging.getLogger("p2phost.transport.mqtt")
#: A record's magic and the type of a LETTER (docs/transports.md, "The records on the
#: medium"): only letters are counted (connection records need a running reader).
_MAGIC = b"p2pI"
_LETTER = 9
#: Seconds to wait for an inbox's retained counts the first time they are looked at.
_FIRST_LOOK = 5.0


def is_letter(record: bytes) -> bool:
    """Whether ``record`` is a LETTER (a message stored for a peer)."""
    return len(record) > 5 and record[:4] == _MAGIC and record[5] == _LETTER


def marker_topic(name: str) -> str:
    """Where a retained message says that inbox ``name`` has a persistent session (MQTT
    cannot tell otherwise, and a broker drops QoS 1 messages nobody's session wants),
    with its limit."""
    return f"p2phost/inboxes/{name}"


def counts_topic(name: str) -> str:
    """The prefix of inbox ``name``'s retained counts."""
    return f"p2phost/inbox-count/{name}/"


def stored_topic(name: str, sender: str) -> str:
    """Letters ``sender`` ever stored in inbox ``name``."""
    return f"{counts_topic(name)}stored/{sender}"


def taken_topic(name: str) -> str:
    """Letters the node of inbox ``name`` ever took from it."""
    return f"{counts_topic(name)}taken"


def marker(limit: int, max_bytes: int = 0, max_age: float = 0.0) -> bytes:
    """The marker's payload for a node whose inbox holds at most ``limit`` letters,
    ``max_bytes`` bytes of records, and letters for ``max_age`` seconds (0: no limit)."""
    return json.dumps({"max-messages": limit, "max-bytes": max_bytes,
                       "max-age": max_age}).encode()


class Watch:
    """The retained counts of the inboxes this node looked at, kept current."""

    def __init__(self, make_client: Callable[[], aiomqtt.Client]) -> None:
        self._make_client = make_client
        self._client: aiomqtt.Client | None = None
        self._reader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._values: dict[str, bytes] = {}
        self._watched: set[str] = set()
        self._pings: dict[str, asyncio.Event] = {}
        # topic -> (the order in which its last value reached this client, that value):
        # the broker routes retained counts to every client in the order it took them.
        self._arrived: dict[str, tuple[int, bytes]] = {}
        self._arrivals = 0
        self._awaited: dict[str, tuple[bytes, asyncio.Event]] = {}

    async def look(self, name: str) -> Inbox:
        """Inbox ``name``'s advertised limits and its counts, as last seen."""
        async with self._lock:
            if name not in self._watched:
                await self._watch(name)
        values = self._values
        said: dict[str, float] = {}
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            said = dict(json.loads(values.get(marker_topic(name)) or b"{}"))
        prefix = f"{counts_topic(name)}stored/"
        return Inbox(int(said.get("max-messages", 0)), int(said.get("max-bytes", 0)),
                     float(said.get("max-age", 0.0)),
                     tuple(parse(v) for k, v in values.items() if k.startswith(prefix)),
                     parse(values.get(taken_topic(name), b"")))

    def senders(self, name: str) -> list[str]:
        """The stored-count topics of inbox ``name`` seen so far."""
        prefix = f"{counts_topic(name)}stored/"
        return [k for k in self._values if k.startswith(prefix)]

    def count(self, topic: str) -> Tally:
        """The count at ``topic`` as last seen (zero: none)."""
        return parse(self._values.get(topic, b""))

    def note(self, topic: str, payload: bytes) -> None:
        """What this node itself publishes (before the broker echoes it)."""
        self._values[topic] = payload

    async def came_back(self, topic: str, timeout: float = _FIRST_LOOK) -> bool:
        """Whether this node's own count at ``topic`` (as noted) has come back from the
        broker, waiting up to ``timeout`` seconds for it: every count the broker took
        before it has then come too."""
        payload = self._values.get(topic, b"")
        if self._arrived.get(topic, (0, b""))[1] == payload:
            return True
        arrived = asyncio.Event()
        self._awaited[topic] = (payload, arrived)
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await arrived.wait()
        finally:
            if self._awaited.get(topic, (b"", None))[1] is arrived:
                del self._awaited[topic]
        return arrived.is_set()

    def claimed_after(self, name: str, topic: str) -> int:
        """The places other senders to inbox ``name`` claimed and have not used yet, by
        counts the broker took after this node's own at ``topic`` (which has come back)."""
        mine = self._arrived.get(topic, (0, b""))[0]
        prefix = f"{counts_topic(name)}stored/"
        return sum(parse(value).unused for key, (order, value) in self._arrived.items()
                   if order > mine and key.startswith(prefix) and key != topic)

    async def _watch(self, name: str) -> None:
        if self._client is None:
            client = self._make_client()
            await client.__aenter__()
            self._client = client
            self._reader = asyncio.get_running_loop().create_task(
                self._read(client), name="mqtt counts")
        await self._client.subscribe([(marker_topic(name), 1), (f"{counts_topic(name)}#", 1)])
        self._watched.add(name)
        # The broker sends the retained messages of a subscription before it routes this
        # client's next publish: once this comes back, every count is here.
        ping = f"{counts_topic(name)}ping/{secrets.token_hex(8)}"
        arrived = self._pings[ping] = asyncio.Event()
        try:
            await self._client.publish(ping, b"", qos=1)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_FIRST_LOOK):
                    await arrived.wait()
        finally:
            self._pings.pop(ping, None)

    async def _read(self, client: aiomqtt.Client) -> None:
        try:
            async for message in client.messages:
                topic, payload = str(message.topic), message.payload
                if topic in self._pings:
                    self._pings[topic].set()
                elif "/ping/" not in topic:
                    value = payload if isinstance(payload, bytes) else b""
                    self._arrivals += 1
                    if value:
                        self._values[topic] = value
                        self._arrived[topic] = (self._arrivals, value)
                    else:  # a retained count cleared: nothing to keep of it
                        self._values.pop(topic, None)
                        self._arrived.pop(topic, None)
                    awaited = self._awaited.get(topic)
                    if awaited is not None and awaited[0] == value:
                        awaited[1].set()
        except aiomqtt.MqttError as exc:
            log.debug("the counts subscription ended: %s", exc)
        # Lost: look again afresh next time.
        self._client = None
        self._watched.clear()

    async def close(self) -> None:
        """Stop watching. Idempotent."""
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
            self._reader = None
        if self._client is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await self._client.__aexit__(None, None, None)
            self._client = None

