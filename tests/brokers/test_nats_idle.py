"""An idle durable NATS inbox (JetStream) is read quietly: a fetch that finds nothing is
not a failure and logs no warning (it used to log "reading the inbox stream ... failed
(retrying): TimeoutError: " with an empty reason), and a record published meanwhile is
still delivered. Real NATS on :4222; the fetch wait is shortened so that the timeouts a
node meets about once a minute happen hundreds of times in two seconds."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from tests.conftest import service_or_skip
from tests.discovery.plugins import use_plugin_source

use_plugin_source("nats-transport")

import nats  # noqa: E402
from p2phost_nats_transport import _streams  # noqa: E402

URL = "nats://127.0.0.1:4222"


@contextlib.asynccontextmanager
async def reading(js: Any, name: str, deliver: Callable[[bytes, Any], Awaitable[None]],
                  caplog: pytest.LogCaptureFixture) -> AsyncIterator[None]:
    """Inbox ``name``'s stream and consumer made, and its pull loop running meanwhile
    (its warnings captured)."""
    await _streams.add_stream(js, name)
    await _streams.fresh_consumer(js, name)
    with caplog.at_level(logging.WARNING, logger="p2phost.transport.nats"):
        reader = asyncio.create_task(_streams.pull(js, name, deliver, URL))
        try:
            yield
        finally:
            reader.cancel()
            with pytest.raises(asyncio.CancelledError):
                await reader


async def test_an_idle_stream_is_read_without_warnings(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    service_or_skip("NATS", 4222)
    # Waits this short run out at every step of nats-py's fetch, including between its
    # two pull requests, where it raises a bare asyncio.TimeoutError.
    monkeypatch.setattr(_streams, "_FETCH_WAIT", 0.002)
    name = f"idle-{secrets.token_hex(4)}"
    nc = await nats.connect(URL)
    js = nc.jetstream()
    got: asyncio.Queue[bytes] = asyncio.Queue(10)

    async def deliver(data: bytes, message: Any) -> None:
        await message.ack()
        got.put_nowait(data)

    try:
        async with reading(js, name, deliver, caplog):
            await asyncio.sleep(2.0)
            await js.publish(_streams.inbox_subject(name), b"still read")
            assert await asyncio.wait_for(got.get(), 10) == b"still read"
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert warnings == [], warnings
    finally:
        await js.delete_stream(_streams.inbox_stream(name))
        await nc.close()


async def test_a_real_failure_is_still_logged_with_a_reason(
        caplog: pytest.LogCaptureFixture) -> None:
    service_or_skip("NATS", 4222)
    name = f"closed-{secrets.token_hex(4)}"
    nc = await nats.connect(URL)
    js = nc.jetstream()

    async def deliver(data: bytes, message: Any) -> None:
        raise AssertionError("nothing to deliver")

    async with reading(js, name, deliver, caplog):
        await asyncio.sleep(0.2)
        await nc.close()  # the connection is gone: a failure, not an idle stream
        for _ in range(100):
            if caplog.records:
                break
            await asyncio.sleep(0.05)
    [record] = caplog.records
    assert "reading the inbox stream" in record.getMessage(), record.getMessage()
    reason = record.getMessage().split("(retrying): ", 1)[1]
    assert reason.split(": ", 1)[1].strip(), record.getMessage()
    cleanup = await nats.connect(URL)
    try:
        await cleanup.jetstream().delete_stream(_streams.inbox_stream(name))
    finally:
        await cleanup.close()
