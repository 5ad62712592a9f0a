"""Import official discovery plugins from their source trees, and a private network for them."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from .netns import loopback_network, require_namespaces

if TYPE_CHECKING:
    from p2phost._runtime import Node

OFFICIAL = Path(__file__).resolve().parents[2] / "official-plugins"


def use_plugin_source(name: str) -> None:
    """Make ``official-plugins/NAME/src`` importable (plugins are not installed in the venv)."""
    src = str(OFFICIAL / name / "src")
    if src not in sys.path:
        sys.path.insert(0, src)


@asynccontextmanager
async def started_nodes() -> AsyncIterator[Callable[[Node], Awaitable[Node]]]:
    """``await start(node)``: starts ``node`` (10 s at most); every node started is closed
    (15 s at most each) on leaving."""
    nodes: list[Node] = []

    async def start(node: Node) -> Node:
        await asyncio.wait_for(node.start(), 10)
        nodes.append(node)
        return node

    try:
        yield start
    finally:
        await asyncio.gather(*(asyncio.wait_for(n.close(), 15) for n in nodes),
                             return_exceptions=True)


@pytest.fixture
def private_network() -> Iterator[str]:
    """Run the test inside a fresh network namespace whose loopback carries multicast.

    Discovery traffic of in-process tests then never leaves this machine, and tests
    running at the same time cannot hear each other.
    """
    require_namespaces()
    with loopback_network() as name:
        yield name
