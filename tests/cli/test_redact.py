"""Passwords in addresses are never printed (docs/transports.md): the redaction itself."""

from __future__ import annotations

import pytest

from p2phost._redact import redact


@pytest.mark.parametrize(("text", "shown"), [
    ("sent to amqp://guest:guest@127.0.0.1:5672/#P (stored on amqp://guest@127.0.0.1:5672/)",
     "sent to amqp://guest@127.0.0.1:5672/#P (stored on amqp://guest@127.0.0.1:5672/)"),
    ("'postgresql://user:p%40ss@db:5432/test'", "'postgresql://user@db:5432/test'"),
    ('{"medium": "redis://:secret@h:6379/0"}', '{"medium": "redis://h:6379/0"}'),
    ("tcp://127.0.0.1:7400 and relay+tcp://1.2.3.4:5/p2p/X",
     "tcp://127.0.0.1:7400 and relay+tcp://1.2.3.4:5/p2p/X"),
    ("no address at all: a:b@c", "no address at all: a:b@c"),
])
def test_a_password_in_an_address_is_left_out(text: str, shown: str) -> None:
    assert redact(text) == shown
