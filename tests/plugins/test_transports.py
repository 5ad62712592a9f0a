"""Both official transports pass the SDK's transport conformance kit."""

from __future__ import annotations

import itertools

import pytest

from p2phost_sdk.testing.transport import TransportCase, TransportConformance
from tests.discovery.plugins import use_plugin_source

use_plugin_source("tcp-transport")
use_plugin_source("memory-transport")

from p2phost_memory_transport import MemoryTransport  # noqa: E402
from p2phost_tcp_transport import TcpTransport  # noqa: E402

_names = itertools.count()


@pytest.fixture(params=["nodelay", "nagle"])
def tcp_case(request: pytest.FixtureRequest) -> TransportCase:
    nodelay = request.param == "nodelay"
    return TransportCase(
        make=lambda limit: TcpTransport(max_frame_size=limit, nodelay=nodelay, read_size=65536),
        listen_address=lambda: "tcp://127.0.0.1:0",
        unreachable_address="tcp://127.0.0.1:1",
        bad_address="tcp://127.0.0.1:notaport",
    )


class TestTcpTransport(TransportConformance):
    @pytest.fixture
    def transport_case(self, tcp_case: TransportCase) -> TransportCase:
        return tcp_case


class TestMemoryTransport(TransportConformance):
    @pytest.fixture
    def transport_case(self) -> TransportCase:
        return TransportCase(
            make=lambda limit: MemoryTransport(max_frame_size=limit, capacity=64),
            listen_address=lambda: f"mem://kit-{next(_names)}",
            unreachable_address="mem://nobody-listens-here",
            bad_address="mem:///no-name",
        )
