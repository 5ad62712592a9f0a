"""The nodes of these tests (the runtime's ``make_node``) run in this process over real
TCP."""

from __future__ import annotations

import pytest


@pytest.fixture
def kind() -> str:
    """In-process nodes over real TCP."""
    return "tcp"
