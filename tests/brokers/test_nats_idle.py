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
from nats.js.errors import NotFoundError  # noqa: E402
from p2phost_nats_transport import _streams  # noqa: E402
from p2phost_nats_transport._progress import InProgress  # noqa: E402

URL = "nats://127.0.0.1:4222"


@contextlib.asynccontextmanager
async def reading(js: Any, name: str, deliver: Callable[[bytes, Any], Awaitable[None]],
                  caplog: pytest.LogCaptureFixture) -> AsyncIterator[None]:
    """Inbox ``name``'s stream and consumer made, and its pull loop running meanwhile
    (its warnings captured)."""
    await _streams.add_stream(js, name)
    await _streams.fresh_consumer(js, name)
    with caplog.at_level(logging.WARNING, logger="p2phost.transport.nats"):
        in_progress = InProgress(_streams.ACK_WAIT)
        reader = asyncio.create_task(_streams.pull(js, name, deliver, URL, in_progress))
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


@pytest.fixture
async def checked_often(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Any, str]]:
    """JetStream and a new inbox name, with the reader's fetch wait and consumer check
    shortened; the inbox's stream is deleted after the test."""
    service_or_skip("NATS", 4222)
    monkeypatch.setattr(_streams, "_FETCH_WAIT", 0.05)
    monkeypatch.setattr(_streams, "_CHECK_EVERY", 0.1)
    nc = await nats.connect(URL)
    name = f"checked-{secrets.token_hex(4)}"
    try:
        yield nc.jetstream(), name
        with contextlib.suppress(NotFoundError):
            await nc.jetstream().delete_stream(_streams.inbox_stream(name))
    finally:
        await nc.close()


async def test_a_consumer_deleted_under_the_reader_is_made_again(
        checked_often: tuple[Any, str], caplog: pytest.LogCaptureFixture) -> None:
    # A deleted consumer reads as an idle stream (every fetch times out): the reader
    # asks now and then, makes it again, says so, and reads what came meanwhile.
    js, name = checked_often
    got: asyncio.Queue[bytes] = asyncio.Queue(10)

    async def deliver(data: bytes, message: Any) -> None:
        await message.ack_sync()  # acknowledged before the consumer goes: not read again
        got.put_nowait(data)

    stream, subject = _streams.inbox_stream(name), _streams.inbox_subject(name)
    async with reading(js, name, deliver, caplog):
        await js.publish(subject, b"before")
        assert await asyncio.wait_for(got.get(), 10) == b"before"
        await js.delete_consumer(stream, "node")
        await js.publish(subject, b"after")
        assert await asyncio.wait_for(got.get(), 10) == b"after"
        await asyncio.sleep(0.5)  # checked again: there, nothing more said
    [record] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert record.getMessage() == (
        f"the consumer 'node' of the inbox stream {stream} on {URL} was deleted while "
        "this node read it (nothing was read meanwhile): made it again")


async def test_a_stream_deleted_under_the_reader_is_one_error_with_a_fix(
        checked_often: tuple[Any, str], caplog: pytest.LogCaptureFixture) -> None:
    js, name = checked_often

    async def deliver(data: bytes, message: Any) -> None:
        raise AssertionError("nothing to deliver")

    async with reading(js, name, deliver, caplog):
        await js.delete_stream(_streams.inbox_stream(name))
        for _ in range(200):  # a loaded machine may take a while to check
            if caplog.records:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # checked several times more: said once
    [record] = caplog.records
    assert record.levelno == logging.ERROR
    assert record.getMessage().startswith(
        f"the inbox stream {_streams.inbox_stream(name)} on {URL} was deleted while")
    assert "\nfix: restart the node (stop it, then p2phost run)" in record.getMessage()
