"""Import official discovery plugins from their source trees, and a private network for them."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .netns import loopback_network, require_namespaces

OFFICIAL = Path(__file__).resolve().parents[2] / "official-plugins"


def use_plugin_source(name: str) -> None:
    """Make ``official-plugins/NAME/src`` importable (plugins are not installed in the venv)."""
    src = str(OFFICIAL / name / "src")
    if src not in sys.path:
        sys.path.insert(0, src)


@pytest.fixture
def private_network() -> Iterator[str]:
    """Run the test inside a fresh network namespace whose loopback carries multicast.

    Discovery traffic of in-process tests then never leaves this machine, and tests
    running at the same time cannot hear each other.
    """
    require_namespaces()
    with loopback_network() as name:
        yield name
