"""amqp-transport passes the SDK transport conformance kit on the real RabbitMQ, and says a
broker outage once."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from p2phost_sdk import Identity
from p2phost_sdk.testing.transport import TransportCase, TransportConformance
from tests.conftest import service_or_skip
from tests.discovery.plugins import use_plugin_source

use_plugin_source("amqp-transport")

from p2phost_amqp_transport import AmqpTransport  # noqa: E402

URL = "amqp://guest:guest@127.0.0.1:5672/"


class TestAmqpTransport(TransportConformance):
    @pytest.fixture
    def transport_case(self, tmp_path: Path) -> TransportCase:
        service_or_skip("RabbitMQ", 5672)
        return TransportCase(
            make=lambda limit: AmqpTransport(peer_id=Identity.generate().peer_id,
                                             max_frame_size=limit, state_dir=tmp_path),
            listen_address=lambda: URL,
            unreachable_address=f"amqp://127.0.0.1:1/#{Identity.generate().peer_id}",
            bad_address="amqp://127.0.0.1:notaport/",
            unknown_peer_address=f"{URL}#{Identity.generate().peer_id}",
            dial_within=3.0,
        )


class _Connection:
    """The part of aio-pika's robust connection that ``Outage.watch`` uses."""

    def __init__(self) -> None:
        self.close_callbacks: set[Any] = set()
        self.reconnect_callbacks: set[Any] = set()
        self.close_called = self.is_closed = False

    def fire(self, callbacks: set[Any], *args: Any) -> None:
        for callback in list(callbacks):
            callback(self, *args)


def test_one_outage_is_said_once_though_the_connection_and_the_reader_see_it(
        caplog: pytest.LogCaptureFixture) -> None:
    from p2phost_amqp_transport._watch import Outage

    medium = SimpleNamespace(url="amqp://127.0.0.1:5672/", reconnects=0)
    connection = _Connection()
    outage = Outage(medium)  # type: ignore[arg-type]
    outage.watch(connection)  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO, "p2phost.transport.amqp"):
        connection.fire(connection.close_callbacks, ConnectionError("reset"))
        outage.lost(ConnectionError("channel closed"))  # the reader's iterator, after
        connection.fire(connection.reconnect_callbacks)
        outage.back()  # the reader consumes again
        outage.lost(None)  # the reader first, this time
        connection.fire(connection.close_callbacks, None)
        connection.close_called = True  # our own close is no outage
        connection.fire(connection.reconnect_callbacks)
        connection.fire(connection.close_callbacks, None)
    said = [r.getMessage().split(" (")[0].split(" after")[0] for r in caplog.records]
    assert said == ["lost the AMQP broker at amqp://127.0.0.1:5672/",
                    "reconnected to the AMQP broker at amqp://127.0.0.1:5672/",
                    "lost the AMQP broker at amqp://127.0.0.1:5672/",
                    "reconnected to the AMQP broker at amqp://127.0.0.1:5672/"]
    assert medium.reconnects == 2
