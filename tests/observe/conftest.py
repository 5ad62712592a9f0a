"""The nodes of these tests (the runtime's ``make_node``) run in this process over real
TCP."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from p2phost_sdk import App
from p2phost_sdk.testing.discovery import wait_until

if TYPE_CHECKING:
    from p2phost._runtime import Node
    from tests.runtime.conftest import MakeNode


@pytest.fixture
def kind() -> str:
    """In-process nodes over real TCP."""
    return "tcp"


async def send_burst(make_node: MakeNode, app: App, burst: int,
                     handled: Callable[[], int]) -> Node:
    """A node running ``app`` and another that sends it ``burst`` notes (bodies 0, 1, ...)
    at once; waits until ``handled()`` counts them all. Returns the sender."""
    receiver = await make_node([app])
    sender = await make_node([])
    peer = await sender.connect(receiver.addresses[0])
    for i in range(burst):
        await sender.send(peer, "note", i)
    await wait_until(lambda: handled() == burst, 10, "every message handled")
    return sender
