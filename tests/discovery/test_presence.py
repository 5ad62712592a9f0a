"""Unit tests of the SDK's discovery helpers: announcements, presence, rejection logs."""

from __future__ import annotations

import logging

import pytest

from p2phost_sdk import (
    AnnouncementError,
    ConfigError,
    Identity,
    PeerRecord,
    PresenceTable,
    RejectLog,
    check_announcement,
    check_scope,
    is_wildcard,
    with_host,
)

PEER = Identity.generate().peer_id


def test_wildcards_take_the_sender_host() -> None:
    assert is_wildcard("tcp://0.0.0.0:7400") and is_wildcard("tcp://[::]:7400")
    assert not is_wildcard("tcp://10.0.0.1:7400") and not is_wildcard("mem://name")
    assert with_host("tcp://0.0.0.0:7400", "10.0.0.5") == "tcp://10.0.0.5:7400"
    assert with_host("tcp://[::]:7400", "fe80::1") == "tcp://[fe80::1]:7400"
    assert with_host("tcp://10.0.0.1:7400", "10.0.0.5") == "tcp://10.0.0.1:7400"
    record = check_announcement(PEER, ["tcp://0.0.0.0:7400", "mem://x"], source="t",
                                hosts=["10.0.0.5", "not-an-ip"])
    assert record == PeerRecord(("tcp://10.0.0.5:7400", "mem://x"), PEER, "t")


@pytest.mark.parametrize(("peer_id", "addresses", "why"), [
    ("nope", ["tcp://a:1"], "not a peer id"),
    (None, ["tcp://a:1"], "not a peer id"),
    (PEER, "tcp://a:1", "not a list"),
    (PEER, [], "expected 1 to 16"),
    (PEER, [f"tcp://a:{i}" for i in range(17)], "expected 1 to 16"),
    (PEER, [7], "not text"),
    (PEER, ["tcp://" + "a" * 300], "longer than"),
    (PEER, ["tcp://a\x00:1"], "control characters"),
    (PEER, ["just words"], "not a URL"),
    (PEER, ["tcp://a:70000"], "out of range"),
    (PEER, ["tcp://0.0.0.0:1"], "no dialable address"),
])
def test_bad_announcements_say_why(peer_id: object, addresses: object, why: str) -> None:
    with pytest.raises(AnnouncementError, match=why):
        check_announcement(peer_id, addresses, source="t")


def test_scope_names() -> None:
    assert check_scope("chat-1", "p") == "chat-1"
    for bad in ("", "-a", "A", "a_b", "x" * 41, 3):
        with pytest.raises(ConfigError):
            check_scope(bad, "p")


def test_presence_table_expires_the_silent() -> None:
    now = [0.0]
    table = PresenceTable(expiry=5.0, clock=lambda: now[0])
    record = PeerRecord(("tcp://a:1",), PEER, "t")
    assert table.heard(record) and not table.heard(record)
    assert table.heard(PeerRecord(("tcp://b:1",), PEER, "t"))  # moved: reported again
    now[0] = 4.0
    assert table.expired() == [] and PEER in table
    now[0] = 9.5
    assert [r.peer_id for r in table.expired()] == [PEER] and len(table) == 0
    assert table.remove(PEER) is None


def test_reject_log_warns_once_per_sender_per_window(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    rejects = RejectLog(logging.getLogger("t"), window=60, clock=lambda: now[0])
    with caplog.at_level(logging.DEBUG, logger="t"):
        for _ in range(5):
            rejects.reject("10.0.0.9", "junk")
        now[0] = 61
        rejects.reject("10.0.0.9", "junk")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert rejects.count == 6 and len(warnings) == 2
