"""Unit tests of the SDK's discovery helpers: announcements, presence, rejection logs,
signed presence records."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest

from p2phost_sdk import (
    CLOCK_SKEW,
    AnnouncementError,
    ConfigError,
    Identity,
    PeerRecord,
    PresenceBook,
    PresenceSigner,
    PresenceTable,
    RejectLog,
    SignedPresence,
    check_announcement,
    check_scope,
    is_wildcard,
    link_addresses,
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
], ids=["bad-id", "no-id", "not-a-list", "empty", "too-many", "not-text", "too-long",
        "control", "not-url", "bad-port", "not-dialable"])  # stable ids: PEER is random
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
    rejects.reject("10.0.0.9", "bad signature: forged")
    assert rejects.reasons == {"malformed": 6, "bad signature": 1}


# -- signed presence -----------------------------------------------------------------


def test_a_signed_record_verifies_and_any_change_breaks_it() -> None:
    signer = PresenceSigner(Identity.generate())
    record = signer.sign("lan", ["tcp://10.0.0.1:7400"], lifetime=5)
    assert record.check() is record and record.peer_id == signer.peer_id
    assert SignedPresence.from_bytes(record.to_bytes()) == record
    for changed in (replace(record, addresses=("tcp://6.6.6.6:7400",)),
                    replace(record, scope="other"), replace(record, goodbye=True),
                    replace(record, expires=record.expires + 1),
                    replace(record, peer_id=Identity.generate().peer_id),
                    replace(record, signature=bytes(64))):
        with pytest.raises(AnnouncementError, match=r"^bad signature") as caught:
            changed.check()
        assert caught.value.reason == "bad signature"
    with pytest.raises(AnnouncementError, match=r"^malformed"):
        SignedPresence.from_bytes(record.to_bytes()[:-1])


def test_sequence_numbers_only_grow_and_lifetimes_lapse() -> None:
    clock = [1000]
    signer = PresenceSigner(Identity.generate(), clock=lambda: clock[0])
    first = signer.sign("lan", ["tcp://a:1"], lifetime=5)
    second = signer.sign("lan", ["tcp://a:1"], lifetime=5)  # same millisecond
    clock[0] = 10  # the clock went back
    third = signer.sign("lan", ["tcp://a:1"], lifetime=5)
    assert first.sequence < second.sequence < third.sequence
    assert third.expires == third.sequence + 5000
    now = third.sequence / 1000
    assert third.check(now=now) and third.check(now=now + 5 + CLOCK_SKEW - 1)
    with pytest.raises(AnnouncementError, match=r"^expired"):
        third.check(now=now + 5 + CLOCK_SKEW + 1)
    with pytest.raises(AnnouncementError, match=r"^expired.*future"):
        third.check(now=now - CLOCK_SKEW - 1)


def test_the_book_keeps_the_newest_record_and_counts_the_rest() -> None:
    signer = PresenceSigner(Identity.generate())
    book = PresenceBook()
    old = signer.sign("lan", ["tcp://old:1"], lifetime=5)
    new = signer.sign("lan", ["tcp://new:1"], lifetime=5)
    assert book.accept(old) and book.accept(new) and not book.accept(new)  # a repeat
    with pytest.raises(AnnouncementError, match=r"^stale"):
        book.accept(old)  # a replay
    with pytest.raises(AnnouncementError, match=r"^bad signature"):
        book.accept(replace(new, sequence=new.sequence + 1))
    bye = signer.sign("lan", ["tcp://ignored:1"], lifetime=5, goodbye=True)
    assert book.accept(bye) and bye.addresses == () and book.newest(signer.peer_id) == bye
    assert book.counters() == {"accepted": 3, "malformed": 0, "bad signature": 1,
                               "expired": 0, "stale": 1}
    book.clock = lambda: bye.expires / 1000 + CLOCK_SKEW + 1
    book.prune()
    assert book.newest(signer.peer_id) is None


def test_each_link_announces_only_its_own_addresses() -> None:
    listen = ["tcp://0.0.0.0:7400", "tcp://10.1.0.5:7401", "mem://x", "tcp://127.0.0.1:7402"]
    assert link_addresses(listen, "10.1.0.5") == (
        "tcp://10.1.0.5:7400", "tcp://10.1.0.5:7401", "mem://x")
    assert link_addresses(listen, "10.2.0.5") == ("tcp://10.2.0.5:7400", "mem://x")
    assert link_addresses(listen, "127.0.0.1") == (
        "tcp://127.0.0.1:7400", "mem://x", "tcp://127.0.0.1:7402")
    # advertise (not strict): as configured, wildcards resolved; nothing left: all of them
    assert link_addresses(["tcp://203.0.113.9:1"], "10.2.0.5", strict=False) == (
        "tcp://203.0.113.9:1",)
    assert link_addresses(["tcp://10.9.9.9:1"], "10.2.0.5") == ("tcp://10.9.9.9:1",)
