"""dht-discovery under the discovery kit as ``p2phost plugin check`` runs it: directed
discovery (it finds the peers it is told of), so the kit's finding tests skip, saying why."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2phost_sdk.testing import PluginUnderTest
from p2phost_sdk.testing.discovery import DiscoveryConformance
from tests.discovery.plugins import OFFICIAL, use_plugin_source

use_plugin_source("dht-discovery")


def _plugin(name: str) -> PluginUnderTest:
    return PluginUnderTest.from_project(Path(OFFICIAL / name))


class TestDhtUnderTheKit(DiscoveryConformance):
    @pytest.fixture
    def discovery_factory(self) -> object:
        factory = _plugin("dht-discovery").kit_fixture("discovery", 0)
        assert factory.directed is True  # from [tool.p2phost.check] in its pyproject
        return factory
