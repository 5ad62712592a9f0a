"""NATS as an inbox medium: core subjects, or JetStream streams with ``durable = true``.

Each node's inbox is the subject ``p2phost.inbox.NAME``.

- Core NATS delivers at most once and holds nothing for an absent reader: a node reads
  its subject with a plain subscription, and answers an empty request on it (a probe)
  so that a dialler learns at once from NATS's *no responders* when nobody reads it.
  A probe answered ``batch`` lets records travel several to a message (``_batches``).
- With JetStream (``durable``), the inbox is the work-queue stream ``p2phost-inbox-NAME``
  read by one durable pull consumer: records wait for an absent node, and stay until
  acknowledged. A new run recreates the consumer, so what the last run left
  unacknowledged is delivered again at once. Publishing to a peer id without a stream
  fails at once (no stream answers).

  Retention is the stream's own (``max_age``, ``max_msgs``, ``max_bytes``, discard new).
  The server removes what passed ``max_age`` without counting it; the node keeps its
  own account of what left the stream (``_accounts``), and what else left it expired
  unread, delivered to a node that was then killed or not.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Hashable, Sequence
from typing import Any

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.js import JetStreamContext
from nats.js.errors import APIError, NoStreamResponseError, NotFoundError

from p2phost_sdk import AddressError, TaskOwner, TransportError
from p2phost_sdk.inbox import (
    Deliver,
    InboxFull,
    InboxTransport,
    Medium,
    MediumAddress,
    MediumError,
    MediumRefused,
    MediumUnavailable,
    UnknownInbox,
)

from . import _streams
from ._accounts import Accounts
from ._batches import BATCH_MAGIC, BATCHES_WELCOME, batch, unbatch
from ._progress import InProgress
from ._streams import add_stream, fresh_consumer, inbox_stream, inbox_subject, limit_stream, pull

log = logging.getLogger("p2phost.transport.nats")
_PING_INTERVAL = 5.0  # seconds between the client's pings to the server
_PROBE_TIMEOUT = 2.0
_KNOWN_LIMIT = 4096  # inboxes whose batch support is remembered (then forgotten at once)


class NatsMedium(Medium):
    """One node's link to one NATS server."""

    def __init__(self, address: MediumAddress, *, durable: bool) -> None:
        if address.parts.path not in ("", "/") or address.parts.query:
            raise AddressError(address.public, "expected nats://HOST:PORT (no path or query)",
                               expected="nats://HOST:PORT")
        self.url = address.public
        self.durable = durable
        if not durable:
            self.cannot_store = (
                f"core NATS at {self.url} cannot hold messages for a peer that is not "
                "running (nothing is stored there); use JetStream: set durable = true under "
                "[config.nats-transport] in p2phost.toml, on the sender and the receiver")
        self._connect_url = address.url
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        #: JetStream: the inbox's reader, and the task keeping what it read in progress.
        self._tasks = TaskOwner(f"NATS at {self.url}", logger=log)
        self.in_progress = InProgress(_streams.ACK_WAIT)
        #: Core NATS: the inbox's subscription (its callback runs in nats-py's task).
        self._subscription: Subscription | None = None
        self._inbox = ""
        self._closing = False
        self._accounts: Accounts | None = None
        self._takes_batches: dict[str, bool] = {}

    @property
    def _client(self) -> Client:
        if self._nc is None or self._nc.is_closed:
            raise MediumUnavailable(f"NATS at {self.url}: not connected")
        return self._nc

    async def connect(self) -> None:
        """Connect (NATS then reconnects on its own); learn the server's max payload."""
        async def quiet(exc: Exception) -> None:
            log.debug("NATS at %s: %s", self.url, exc)

        async def disconnected() -> None:
            if not self._closing:
                log.warning("lost NATS at %s (reconnecting every 0.5 s; nothing is sent or "
                            "received meanwhile)\nfix: check that the NATS server runs there "
                            "and the network to it", self.url)

        async def reconnected() -> None:
            log.info("reconnected to NATS at %s", self.url)

        try:
            self._nc = await nats.connect(
                servers=[self._connect_url], connect_timeout=5, allow_reconnect=True,
                max_reconnect_attempts=-1, reconnect_time_wait=0.5, error_cb=quiet,
                disconnected_cb=disconnected, reconnected_cb=reconnected,
                # A server gone without closing the socket (killed host, cut network)
                # is seen when two pings go unanswered: 10-15 s, not the client's 4 min.
                ping_interval=_PING_INTERVAL, max_outstanding_pings=2)
        except nats.errors.NoServersError as exc:
            raise MediumUnavailable(f"NATS at {self.url}: connection refused or no answer "
                                    f"({exc})") from exc
        except (NatsError, OSError) as exc:
            if "authorization" in str(exc).lower():
                raise MediumRefused(f"NATS at {self.url} refused the credentials: {exc} (fix "
                                    "the user and password in the address)") from exc
            raise MediumUnavailable(f"NATS at {self.url}: {exc}") from exc
        self.max_record_size = self._nc.max_payload
        if self.durable:
            self._js = self._nc.jetstream(timeout=10.0)

    async def open_inbox(self, name: str, deliver: Deliver) -> None:
        """Subscribe (core) or create the stream and its consumer (JetStream)."""
        self._inbox = name
        if self._js is not None:
            await self._open_stream(self._js, name)
            work = pull(self._js, name, deliver, self.url, self.in_progress)
        else:
            async def on_message(message: Msg) -> None:
                data = message.data
                if data[:4] == BATCH_MAGIC:
                    for record in unbatch(data):
                        await deliver(record, None)
                elif message.reply and not data:
                    await message.respond(BATCHES_WELCOME)  # a probe: someone reads it
                else:
                    await deliver(data, None)

            try:
                # Subscribed (and known to the server) before anyone may dial us. A
                # callback, not ``async for`` over ``messages``: nats-py's iterator
                # starts a task and an ``asyncio.wait`` per message, which cost more
                # than the rest of a message's way through the node.
                self._subscription = await self._client.subscribe(
                    inbox_subject(name), cb=on_message, pending_msgs_limit=-1,
                    pending_bytes_limit=-1)
                await self._client.flush(timeout=10)
            except (NatsError, OSError) as exc:
                raise MediumUnavailable(f"NATS at {self.url}: cannot subscribe to the inbox: "
                                        f"{exc}") from exc
            return
        self._tasks.spawn(work, name=f"nats reader {name[:12]}")
        self._tasks.spawn(self.in_progress.keep(), name=f"nats in progress {name[:12]}")

    async def create_inbox(self, name: str) -> None:
        """The work-queue stream: what is published before the node first runs waits
        there for its consumer."""
        if self._js is None:
            raise MediumError(self.cannot_store)
        try:
            await add_stream(self._js, name)
        except (NatsError, OSError) as exc:
            raise MediumUnavailable(f"NATS at {self.url}: cannot create the inbox stream "
                                    f"{inbox_stream(name)}: {exc}") from exc

    async def inbox_stats(self, name: str) -> dict[str, Any]:
        """The stream's message and byte counts."""
        if self._js is None:
            return await super().inbox_stats(name)
        try:
            info = await self._js.stream_info(inbox_stream(name))
        except NotFoundError:
            return {"exists": False, "records": 0, "bytes": 0}
        except (NatsError, OSError) as exc:
            raise MediumUnavailable(f"NATS at {self.url}: {exc}") from exc
        state = info.state
        left = (state.last_seq or 0) - (state.messages or 0)
        acked = await self._account.get(name, "acked")
        purged = await self._account.get(name, "purged")
        return {"exists": True, "records": state.messages, "bytes": state.bytes,
                "expired": max(0, left - acked - purged)}

    @property
    def _account(self) -> Accounts:
        if self._accounts is None:
            if self._js is None:
                raise MediumError(self.cannot_store)
            self._accounts = Accounts(self._js)
        return self._accounts

    async def purge_inbox(self, name: str) -> int | None:
        """Purge the stream (it and its consumer stay)."""
        if self._js is None:
            raise MediumError(self.cannot_store)
        try:
            purged = await self._account.get(name, "purged")
            state = (await self._js.stream_info(inbox_stream(name))).state
            await self._js.purge_stream(inbox_stream(name))
            # Purged is not expired: what left in the purge is accounted for. (A record
            # stored between the two calls is counted as purged twice at worst, never
            # as expired.)
            await self._account.put(name, "purged", purged + (state.messages or 0))
            await fresh_consumer(self._js, name)
        except NotFoundError:
            return 0
        except (NatsError, OSError) as exc:
            raise MediumUnavailable(f"NATS at {self.url}: {exc}") from exc
        return int(state.messages or 0)

    async def delete_inbox(self, name: str) -> bool:
        """Delete the stream."""
        if self._js is None:
            raise MediumError(self.cannot_store)
        try:
            await self._js.delete_stream(inbox_stream(name))
        except NotFoundError:
            return False
        except (NatsError, OSError) as exc:
            raise MediumUnavailable(f"NATS at {self.url}: {exc}") from exc
        await self._account.forget(name)
        return True

    async def store(self, name: str, records: Sequence[bytes]) -> None:
        """Publish and wait for each ack; the stream's own limits (``discard = new``)
        refuse what passes them. (One at a time: nats-py's publish_async never settles
        a refused publish.)"""
        if self._js is None:
            await self.append(name, records)
            return
        subject = inbox_subject(name)
        try:
            for record in records:
                await self._js.publish(subject, record)
        except NoStreamResponseError:
            raise UnknownInbox(f"no inbox {name} on {self.url}") from None
        except APIError as exc:
            if "maximum" not in str(exc.description or "").lower():
                raise TransportError(f"NATS at {self.url} refused a record: {exc}") from exc
            raise InboxFull(
                f"the inbox of {name} on {self.url} is full ({exc.description}): nothing "
                "was stored; it empties as that node runs (its operator can raise the "
                "limit in [config.nats-transport], or `p2phost inbox purge`)") from None
        except (NatsError, OSError) as exc:
            raise MediumUnavailable(f"NATS at {self.url}: {exc or type(exc).__name__}") from exc

    async def _open_stream(self, js: JetStreamContext, name: str) -> None:
        stream = inbox_stream(name)
        try:
            await add_stream(js, name)
            if "-" not in name:
                await limit_stream(js, name, self.retention)
                # What expired while the node was away becomes the node's own count,
                # and the account starts again from here.
                stats = await self.inbox_stats(name)
                self.expired_at_open = int(stats["expired"])
                account = self._account
                account.start(await account.get(name, "acked"))
                account.acked += self.expired_at_open
                await account.write_acked(name)
            await fresh_consumer(js, name)
        except (NatsError, OSError) as exc:
            raise MediumUnavailable(f"NATS at {self.url}: cannot open the inbox stream "
                                    f"{stream}: {exc}") from exc

    async def probe(self, name: str) -> bool | None:
        """Core NATS: an empty request on the inbox subject; *no responders* means nobody
        reads it. (JetStream appends tell by themselves.)"""
        if self._js is not None:
            return None
        try:
            answer = await self._client.request(inbox_subject(name), b"",
                                                timeout=_PROBE_TIMEOUT)
        except NoRespondersError:
            return False
        except (NatsError, OSError):
            return None
        if len(self._takes_batches) >= _KNOWN_LIMIT:
            self._takes_batches.clear()
        self._takes_batches[name] = answer.data == BATCHES_WELCOME
        return True

    async def append(self, name: str, records: Sequence[bytes]) -> None:
        """Publish in order; JetStream: wait for every stream acknowledgement; core: wait
        for the server's PONG after them (a flush)."""
        subject = inbox_subject(name)
        try:
            if self._js is not None:
                acks = [await self._js.publish_async(subject, record) for record in records]
                await asyncio.gather(*acks)
            else:
                client = self._client
                batches = self._takes_batches.get(name)
                if batches is None and len(records) > 1:
                    # A burst to an inbox never probed (a dialler's): probe it once.
                    self._takes_batches[name] = False  # until (unless) it answers ``batch``
                    await self.probe(name)
                    batches = self._takes_batches.get(name, False)
                for payload in (batch(records, client.max_payload) if batches else records):
                    await client.publish(subject, payload)
                # The PONG fails when the connection was cut under what was written:
                # the append is retried (the reader drops what it got twice).
                await client.flush(timeout=10)
        except NoStreamResponseError:
            raise UnknownInbox(f"no inbox {name} on {self.url}") from None
        except (NatsError, OSError) as exc:
            raise MediumUnavailable(f"NATS at {self.url}: {exc or type(exc).__name__}") from exc

    def record_of(self, token: Any) -> Hashable | None:
        """A JetStream message's stream sequence: a redelivery (its ack deadline passed
        while a handler ran) has it too, and acknowledging any delivery settles it."""
        try:
            return int(token.metadata.sequence.stream)
        except (NatsError, ValueError, IndexError, AttributeError, TypeError):
            return None

    async def ack(self, name: str, tokens: Sequence[Any]) -> None:
        """Acknowledge JetStream messages (core NATS has nothing to acknowledge)."""
        try:
            for message in tokens:
                if isinstance(message, Msg):
                    await message.ack()
                    self.in_progress.done(message)
                    self._account.note_acked(message)
            if self._accounts is not None and "-" not in name:
                # After the acks: a node killed in between (a few ms) leaves this batch
                # counted as expired, never an expired record uncounted.
                await self._client.flush(timeout=10)
                await self._accounts.write_acked(name)
        except (NatsError, OSError) as exc:
            raise MediumUnavailable(f"NATS at {self.url}: {exc}") from exc

    async def close(self, *, delete_inbox: bool) -> None:
        """Stop reading; delete a short-lived inbox's stream; disconnect."""
        self._closing = True
        await self._tasks.close()
        if self._subscription is not None:
            with contextlib.suppress(NatsError, OSError):
                await self._subscription.unsubscribe()
            self._subscription = None
        if self._nc is None:
            return
        try:
            if delete_inbox and self._inbox and self._js is not None:
                await self._js.delete_stream(inbox_stream(self._inbox))
        except (NatsError, OSError) as exc:
            log.debug("could not delete the inbox stream on %s: %s", self.url, exc)
        finally:
            with contextlib.suppress(NatsError, OSError):
                await self._nc.close()


class NatsTransport(InboxTransport):
    """``nats://HOST:PORT``: node inboxes as NATS subjects (JetStream when durable)."""

    schemes = ("nats",)
    default_port = 4222
    address_example = "nats://HOST:PORT"

    def __init__(self, *, durable: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.durable = durable
        if not durable and self.options.gap_timeout > 5.0:
            # Core NATS never redelivers: a missing frame is lost, not late.
            self.options = dataclasses.replace(self.options, gap_timeout=5.0)

    def make_medium(self, address: MediumAddress) -> Medium:
        """A NATS medium for ``address``."""
        return NatsMedium(address, durable=self.durable)
