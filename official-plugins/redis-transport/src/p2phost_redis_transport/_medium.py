"""Redis Streams as an inbox medium.

Each node's inbox is the stream ``p2phost:inbox:NAME`` with one consumer group. Records
are read with ``XREADGROUP`` and stay in the group's pending entries list until
acknowledged (``XACK``, then ``XDEL`` so the stream does not grow). After a crash or a
lost connection the reader starts again from the pending entries (id ``0``), then reads
new ones (``>``). Appends use ``XADD NOMKSTREAM``: appending to a peer id that has no
inbox fails at once instead of creating a stream nobody reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Hashable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    AuthenticationError,
    ConnectionError,
    NoPermissionError,
    RedisError,
    ResponseError,
    TimeoutError,
)

from p2phost_sdk import AddressError, TransportError
from p2phost_sdk.inbox import (
    Deliver,
    InboxFull,
    InboxTransport,
    Medium,
    MediumAddress,
    MediumRefused,
    MediumUnavailable,
    UnknownInbox,
    backoff,
    stop_if_cancelled,
)

log = logging.getLogger("p2phost.transport.redis")
_GROUP = "p2phost"
_CONSUMER = "node"
_FIELD = b"r"
_BLOCK_MS = 1000
_BATCH = 256
_DEFAULT_MAX = 512 * 1024 * 1024  # Redis's proto-max-bulk-len default


def inbox_key(name: str) -> str:
    """The stream that holds inbox ``name``."""
    return f"p2phost:inbox:{name}"


def limits_key(name: str) -> str:
    """The hash of inbox ``name``'s retention limits (``age`` ms, ``messages``,
    ``bytes``), written by its node, read by every stored append."""
    return f"p2phost:inbox-limits:{name}"


def expired_key(name: str) -> str:
    """How many records of inbox ``name`` expired unread."""
    return f"p2phost:inbox-expired:{name}"


# A stored append, atomic in Redis: records older than the age limit are trimmed first
# (XTRIM MINID, counted as expired), then the append is refused if it would pass the
# count or size limit, else XADDed. No stream: the inbox does not exist (NOMKSTREAM).
_STORE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return redis.error_reply('NOINBOX') end
local limits = redis.call('HMGET', KEYS[2], 'age', 'messages', 'bytes')
local age, messages, bytes = tonumber(limits[1] or 0), tonumber(limits[2] or 0),
    tonumber(limits[3] or 0)
if age > 0 then
  local now = redis.call('TIME')
  local cut = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - age
  local gone = redis.call('XTRIM', KEYS[1], 'MINID', cut)
  if gone > 0 then redis.call('INCRBY', KEYS[3], gone) end
end
if #ARGV == 0 then return 0 end
if messages > 0 and redis.call('XLEN', KEYS[1]) + #ARGV > messages then
  return redis.error_reply('FULL max-messages = ' .. messages .. ' waiting records')
end
if bytes > 0 then
  local size = 0
  for _, record in ipairs(ARGV) do size = size + #record end
  if (redis.call('MEMORY', 'USAGE', KEYS[1]) or 0) + size > bytes then
    return redis.error_reply('FULL max-bytes = ' .. bytes .. ' bytes')
  end
end
for _, record in ipairs(ARGV) do redis.call('XADD', KEYS[1], '*', 'r', record) end
return #ARGV
"""


def _unavailable(url: str, exc: Exception) -> MediumUnavailable:
    return MediumUnavailable(f"Redis at {url}: {exc or type(exc).__name__}")


class RedisMedium(Medium):
    """One node's link to one Redis database."""

    def __init__(self, address: MediumAddress) -> None:
        path = address.parts.path.strip("/") or "0"
        if not path.isdigit():
            raise AddressError(address.public, "the path must be the database number "
                               "(expected redis://HOST:PORT/DB, e.g. redis://127.0.0.1:6379/0)",
                               expected="redis://HOST:PORT/DB, e.g. redis://127.0.0.1:6379/0")
        self.url = address.public
        options: dict[str, Any] = {
            "socket_connect_timeout": 5.0, "retry": Retry(NoBackoff(), 0),
        }
        self._client = aioredis.Redis.from_url(address.url, socket_timeout=10.0, **options)
        # Blocking reads get a connection of their own, with a timeout past the block.
        self._reader_client = aioredis.Redis.from_url(
            address.url, socket_timeout=_BLOCK_MS / 1000 + 5.0, **options)
        self._reader: asyncio.Task[None] | None = None
        self._inbox = ""
        self._store = self._client.register_script(_STORE)

    async def connect(self) -> None:
        """PING the server; learn its largest bulk string."""
        try:
            await self._client.ping()
        except (AuthenticationError, NoPermissionError) as exc:
            raise MediumRefused(f"Redis at {self.url} refused the credentials: {exc} (fix "
                                "the user and password in the address)") from exc
        except ResponseError as exc:
            raise MediumRefused(f"Redis at {self.url} refused the connection: {exc}") from exc
        except (ConnectionError, TimeoutError, OSError) as exc:
            raise _unavailable(self.url, exc) from exc
        try:
            config: Any = await self._client.config_get("proto-max-bulk-len")
            self.max_record_size = int(config.get("proto-max-bulk-len", _DEFAULT_MAX))
        except (RedisError, ValueError):
            self.max_record_size = _DEFAULT_MAX  # CONFIG may be disabled: assume the default

    async def open_inbox(self, name: str, deliver: Deliver) -> None:
        """Create the stream and its group (if new) and start reading."""
        self._inbox = name
        await self._create_group(inbox_key(name))
        retention = self.retention
        try:
            if retention:
                await self._client.hset(limits_key(name), mapping={
                    "age": int(retention.max_age * 1000), "messages": retention.max_messages,
                    "bytes": retention.max_bytes})
                await self._store(keys=self._keys(name), args=[])  # expire what is old
            else:
                await self._client.delete(limits_key(name))
        except (ConnectionError, TimeoutError, OSError) as exc:
            raise _unavailable(self.url, exc) from exc
        self._reader = asyncio.get_running_loop().create_task(
            self._read(inbox_key(name), deliver), name=f"redis reader {name[:12]}")

    async def _create_group(self, key: str) -> None:
        try:
            await self._client.xgroup_create(key, _GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise MediumRefused(f"Redis at {self.url}: cannot create the inbox {key}: "
                                    f"{exc}") from exc
        except (ConnectionError, TimeoutError, OSError) as exc:
            raise _unavailable(self.url, exc) from exc

    async def _read(self, key: str, deliver: Deliver) -> None:
        failures = 0
        while True:
            try:
                # What an earlier run (or a lost connection) left unacknowledged first.
                await self._read_from(key, "0", deliver)
                if failures:
                    log.info("reconnected to Redis at %s", self.url)
                failures = 0
                while True:
                    await self._read_from(key, ">", deliver)
            except (ConnectionError, TimeoutError, OSError) as exc:
                if failures == 0:
                    log.warning("lost Redis at %s (reconnecting): %s", self.url, exc)
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    log.error("reading the inbox %s on %s failed: %s", key, self.url, exc)
                else:
                    log.warning("the inbox %s on %s was removed: creating it again", key,
                                self.url)
                    with contextlib.suppress(MediumUnavailable, MediumRefused):
                        await self._create_group(key)
            stop_if_cancelled()
            await asyncio.sleep(backoff(failures))
            failures += 1

    async def _read_from(self, key: str, start: str, deliver: Deliver) -> None:
        """Read from ``start`` (``0``: our pending entries, to the end; ``>``: new ones)."""
        last = start
        while True:
            # RESP2 reply: [[stream, [(id, {field: value}), ...]]]; fields are None for an
            # entry deleted while pending.
            reply: Any = await self._reader_client.xreadgroup(
                _GROUP, _CONSUMER, {key: last}, count=_BATCH,
                block=_BLOCK_MS if start == ">" else None)
            entries = reply[0][1] if reply else []
            stop_if_cancelled()
            for entry_id, fields in entries:
                await deliver(fields.get(_FIELD, b"") if fields else b"", entry_id)
            if start == ">" or not entries:
                return
            last = entries[-1][0]

    @staticmethod
    def _keys(name: str) -> list[str]:
        return [inbox_key(name), limits_key(name), expired_key(name)]

    async def store(self, name: str, records: Sequence[bytes]) -> None:
        """The stored append script: limits checked and the records added atomically."""
        try:
            await self._store(keys=self._keys(name), args=list(records))
        except (ConnectionError, TimeoutError, OSError) as exc:
            raise _unavailable(self.url, exc) from exc
        except ResponseError as exc:
            text = str(exc)
            if "NOINBOX" in text:
                raise UnknownInbox(f"no inbox {name} on {self.url}") from None
            if "FULL" in text:
                limit = text.split("FULL", 1)[1].strip()
                raise InboxFull(
                    f"the inbox of {name} on {self.url} is full ({limit}): nothing was "
                    "stored; it empties as that node runs (its operator can raise the "
                    "limit in [config.redis-transport], or `p2phost inbox purge`)") from None
            raise TransportError(f"Redis at {self.url} refused a record: {exc}") from exc

    async def create_inbox(self, name: str) -> None:
        """The stream and its group, read from the start: what is appended before the
        node first runs waits for it."""
        await self._create_group(inbox_key(name))

    async def inbox_stats(self, name: str) -> dict[str, Any]:
        """``XLEN`` and ``MEMORY USAGE`` of the stream."""
        key = inbox_key(name)
        try:
            exists = bool(await self._client.exists(key))
            records = int(await self._client.xlen(key)) if exists else 0
            size: Any = await self._client.memory_usage(key) if exists else 0
            expired = int(await self._client.get(expired_key(name)) or 0)
        except (ConnectionError, TimeoutError, OSError) as exc:
            raise _unavailable(self.url, exc) from exc
        return {"exists": exists, "records": records, "bytes": int(size or 0),
                "expired": expired}

    async def peek(self, name: str, limit: int) -> list[tuple[bytes, float | None]]:
        """``XRANGE`` from the start; an entry id's first part is its time in ms."""
        try:
            entries: Any = await self._client.xrange(inbox_key(name), count=limit)
        except (ConnectionError, TimeoutError, OSError) as exc:
            raise _unavailable(self.url, exc) from exc
        return [(fields.get(_FIELD, b""), int(entry_id.split(b"-")[0]) / 1000)
                for entry_id, fields in entries]

    async def purge_inbox(self, name: str) -> int | None:
        """``XTRIM MAXLEN 0``: every record goes, the stream and its group stay."""
        try:
            return int(await self._client.xtrim(inbox_key(name), maxlen=0, approximate=False))
        except (ConnectionError, TimeoutError, OSError) as exc:
            raise _unavailable(self.url, exc) from exc

    async def delete_inbox(self, name: str) -> bool:
        """Remove the stream (and what it holds); whether it existed."""
        try:
            existed = bool(await self._client.delete(inbox_key(name)))
            await self._client.delete(limits_key(name), expired_key(name))
            return existed
        except (ConnectionError, TimeoutError, OSError) as exc:
            raise _unavailable(self.url, exc) from exc

    async def append(self, name: str, records: Sequence[bytes]) -> None:
        """``XADD NOMKSTREAM`` each record, pipelined in order."""
        key = inbox_key(name)
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for record in records:
                    pipe.xadd(key, {_FIELD: record}, nomkstream=True)
                ids = await pipe.execute()
        except (ConnectionError, TimeoutError, OSError) as exc:
            raise _unavailable(self.url, exc) from exc
        except ResponseError as exc:
            raise TransportError(f"Redis at {self.url} refused a record: {exc}") from exc
        if any(entry_id is None for entry_id in ids):
            raise UnknownInbox(f"no inbox {name} on {self.url}")

    def record_of(self, token: Any) -> Hashable | None:
        """A stream entry's id: every delivery of the entry has it (one XACK settles
        them all)."""
        return token if isinstance(token, (bytes, str)) else None

    async def ack(self, name: str, tokens: Sequence[Any]) -> None:
        """``XACK`` and ``XDEL`` the entries: done, and no longer kept."""
        key = inbox_key(name)
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.xack(key, _GROUP, *tokens)
                pipe.xdel(key, *tokens)
                await pipe.execute()
        except (ConnectionError, TimeoutError, OSError) as exc:
            raise _unavailable(self.url, exc) from exc

    async def close(self, *, delete_inbox: bool) -> None:
        """Stop reading; delete the stream of a short-lived inbox; disconnect."""
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
            self._reader = None
        try:
            if delete_inbox and self._inbox:
                await self._client.delete(inbox_key(self._inbox))
        except (RedisError, OSError) as exc:
            log.debug("could not delete the inbox on %s: %s", self.url, exc)
        finally:
            await self._client.aclose()
            await self._reader_client.aclose()


class RedisTransport(InboxTransport):
    """``redis://HOST:PORT/DB``: node inboxes as Redis streams."""

    schemes = ("redis",)
    default_port = 6379
    address_example = "redis://HOST:PORT/DB"

    def make_medium(self, address: MediumAddress) -> Medium:
        """A Redis medium for ``address``."""
        return RedisMedium(address)
