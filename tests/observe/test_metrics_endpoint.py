"""The /metrics endpoint bounds what a client can hold (connections, time, threads) and
serves only /metrics, in prometheus-client's own formats."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from p2phost._observability import MetricsSettings, _endpoint
from p2phost._runtime import Node
from tests.runtime.conftest import MakeNode
from tests.runtime.conftest import make_node as make_node  # the fixture

TIMEOUT = 1.0
HALF_SENT = 200


async def metrics_node(make_node: MakeNode, monkeypatch: pytest.MonkeyPatch) -> Node:
    """A node serving metrics on loopback, giving clients ``TIMEOUT`` s."""
    monkeypatch.setattr(_endpoint, "READ_TIMEOUT", TIMEOUT)
    node = await make_node([], metrics=MetricsSettings(listen="127.0.0.1:0"))
    assert node.metrics is not None
    return node


async def answer(reader: asyncio.StreamReader) -> bytes:
    """What the endpoint sent before it closed (b"" when it reset the connection)."""
    try:
        return await asyncio.wait_for(reader.read(), TIMEOUT + 5)
    except ConnectionResetError:
        return b""


async def test_half_sent_requests_are_cut_after_the_timeout_and_hold_no_thread(
        make_node: MakeNode, monkeypatch: pytest.MonkeyPatch) -> None:
    node = await metrics_node(make_node, monkeypatch)
    assert node.metrics is not None
    host, port = node.metrics.address.rsplit(":", 1)
    async with httpx.AsyncClient() as client:  # the endpoint's one thread is started
        assert (await client.get(f"http://{node.metrics.address}/metrics")).status_code == 200
    threads = threading.active_count()

    streams = [await asyncio.open_connection(host, int(port)) for _ in range(HALF_SENT)]
    for _, writer in streams:
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    started = time.monotonic()
    await asyncio.sleep(TIMEOUT / 2)
    assert threading.active_count() <= threads
    endpoint = node.metrics._endpoint
    assert endpoint is not None and endpoint.connections <= _endpoint.MAX_CONNECTIONS

    # Beyond the limit: closed at once; within it: 408 once the timeout passed.
    answers = await asyncio.gather(*(answer(reader) for reader, _ in streams))
    assert time.monotonic() - started < TIMEOUT + 2
    statuses = collections.Counter(got.split(b" ", 2)[1] if got else b"closed"
                                   for got in answers)
    assert statuses == {b"408": _endpoint.MAX_CONNECTIONS,
                        b"closed": HALF_SENT - _endpoint.MAX_CONNECTIONS}
    assert endpoint.connections == 0 and threading.active_count() <= threads
    for _, writer in streams:
        writer.close()

    # A request trickled a byte at a time is cut too: the timeout is for the whole head.
    reader, writer = await asyncio.open_connection(host, int(port))
    started = time.monotonic()
    got = b""
    for byte in b"GET /metrics HTTP/1.1\r\nX-Slow: " + b"a" * 100:
        writer.write(bytes([byte]))
        with contextlib.suppress(TimeoutError):  # nothing yet: the next byte
            got = await asyncio.wait_for(reader.read(1), TIMEOUT / 10)
            break
    assert (got + await answer(reader)).startswith(b"HTTP/1.1 408 ")
    assert time.monotonic() - started < TIMEOUT + 1
    writer.close()

    async with httpx.AsyncClient() as client:  # and scrapes are served again
        assert (await client.get(f"http://{node.metrics.address}/metrics")).status_code == 200


async def test_only_metrics_is_served_in_the_format_asked(
        make_node: MakeNode, monkeypatch: pytest.MonkeyPatch) -> None:
    node = await metrics_node(make_node, monkeypatch)
    assert node.metrics is not None
    base = f"http://{node.metrics.address}"
    async with httpx.AsyncClient(timeout=10) as client:
        for path in ("/", "/nope", "/../../etc/passwd", "/metrics/", "/favicon.ico"):
            answer = await client.get(base + path)
            assert answer.status_code == 404, path
            assert "/metrics" in answer.text
        answer = await client.post(base + "/metrics", content=b"x")
        assert answer.status_code == 405 and answer.headers["allow"] == "GET, HEAD"
        answer = await client.get(base + "/metrics", headers={"X-Big": "a" * 20_000})
        assert answer.status_code == 431

        text = await client.get(base + "/metrics", headers={"Accept-Encoding": "gzip"})
        assert text.headers["content-encoding"] == "gzip"
        names = {family.name for family in text_string_to_metric_families(text.text)}
        assert {"p2phost_peers", "process_resident_memory_bytes"} <= names
        assert (await client.head(base + "/metrics")).content == b""

        openmetrics = await client.get(base + "/metrics", headers={
            "Accept": "application/openmetrics-text; version=1.0.0"})
        assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
        assert "p2phost_peers" in {f.name for f in openmetrics_families(openmetrics.text)}


async def _exchange(port: int, request: bytes) -> bytes:
    """The endpoint's answer to ``request`` (b"" when it reset the connection)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        with contextlib.suppress(ConnectionError):  # reset: what answer() reads says so
            await writer.drain()
        return await answer(reader)
    finally:
        writer.close()


async def test_sockets_that_send_nothing_make_room_for_a_scraper() -> None:
    endpoint = _endpoint.MetricsEndpoint(CollectorRegistry())
    _, port = await endpoint.start("127.0.0.1", 0)
    silent = [await asyncio.open_connection("127.0.0.1", port)
              for _ in range(_endpoint.MAX_CONNECTIONS)]
    try:
        await asyncio.sleep(0.2)
        # Every place is held by a socket that sent nothing (re-opened every READ_TIMEOUT
        # they would keep every scrape out): the oldest of them makes room.
        got = await _exchange(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert got.startswith(b"HTTP/1.1 200"), got[:40]
        assert await answer(silent[0][0]) == b""
        assert endpoint.connections == _endpoint.MAX_CONNECTIONS - 1
    finally:
        for _, writer in silent:
            writer.close()
        await endpoint.close()


async def test_a_head_request_gets_no_body_whatever_its_status() -> None:
    endpoint = _endpoint.MetricsEndpoint(CollectorRegistry())
    _, port = await endpoint.start("127.0.0.1", 0)
    try:
        for target, status in ((b"/nope", b"404"), (b"/metrics", b"200")):
            got = await _exchange(port, b"HEAD " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            head, _, body = got.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 " + status) and body == b"", got
    finally:
        await endpoint.close()


async def test_a_post_with_a_body_gets_its_405_not_a_reset() -> None:
    endpoint = _endpoint.MetricsEndpoint(CollectorRegistry())
    _, port = await endpoint.start("127.0.0.1", 0)
    body = b"x" * 200_000  # beyond what the server reads ahead: unread when it answers
    try:
        got = await _exchange(port, b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: "
                              + str(len(body)).encode() + b"\r\n\r\n" + body)
        assert got.startswith(b"HTTP/1.1 405"), got[:40]
        chunked = (b"POST /metrics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                   + b"".join(b"%x\r\n%s\r\n" % (20_000, b"y" * 20_000) for _ in range(10))
                   + b"0\r\n\r\n")
        assert (await _exchange(port, chunked)).startswith(b"HTTP/1.1 405")
        for _ in range(100):  # the client closed: so does the endpoint, soon after
            if not endpoint.connections:
                break
            await asyncio.sleep(0.01)
        assert endpoint.connections == 0
    finally:
        await endpoint.close()
