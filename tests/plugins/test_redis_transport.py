"""redis-transport passes the SDK transport conformance kit against the real Redis."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from p2phost_sdk import Identity, Transport
from p2phost_sdk.testing.transport import TransportCase, TransportConformance
from tests.conftest import service_or_skip
from tests.discovery.plugins import use_plugin_source

use_plugin_source("redis-transport")

from p2phost_redis_transport import RedisTransport  # noqa: E402

URL = "redis://127.0.0.1:6379/0"


def maker(state: Path) -> Callable[[int], Transport]:
    """New nodes' Redis transports, each with its own peer id."""
    return lambda limit: RedisTransport(peer_id=Identity.generate().peer_id,
                                        max_frame_size=limit, state_dir=state)


class TestRedisTransport(TransportConformance):
    @pytest.fixture
    def transport_case(self, tmp_path: Path) -> TransportCase:
        service_or_skip("Redis", 6379)
        return TransportCase(
            make=maker(tmp_path),
            listen_address=lambda: URL,
            unreachable_address=f"redis://127.0.0.1:1/0#{Identity.generate().peer_id}",
            bad_address="redis://127.0.0.1:6379/notadb",
            unknown_peer_address=f"{URL}#{Identity.generate().peer_id}",
            dial_within=3.0,
        )
