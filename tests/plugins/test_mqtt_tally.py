"""The MQTT inbox counts: what waits and what expired, from the senders' and the node's
retained counts (docs/transports.md, "Retention", MQTT)."""

from __future__ import annotations

from tests.discovery.plugins import use_plugin_source

use_plugin_source("mqtt-transport")

from p2phost_mqtt_transport._tally import (  # noqa: E402
    Count,
    Inbox,
    Tally,
    bucket_of,
    bucket_width,
    parse,
)


def test_buckets_are_a_32nd_of_max_age_and_at_least_a_second() -> None:
    assert bucket_width(2.0) == 1 and bucket_width(3200.0) == 100
    assert bucket_of(1000.0, 3200.0) == 4200
    assert bucket_of(1000.5, 3200.0) == 4300  # never before t + max-age


def test_expired_is_stored_minus_taken_in_ended_buckets_whoever_folded_what() -> None:
    alice, bob = Tally(), Tally()
    alice.add(Count(3, 300), 100)  # two of these three are taken before they expire
    alice.add(Count(2, 200), 200)
    bob.add(Count(2, 200), None)  # stored when the inbox had no max-age
    node = Tally()
    node.add(Count(2, 200), 100)
    node.passed = 150  # it has read past bucket 100
    assert Inbox(stored=(alice, bob), taken=node).expired(100.5) == Count()
    # Bucket 100 ended: one of alice's letters expired unread; it is gone (passed).
    inbox = Inbox(stored=(alice, bob), taken=node)
    assert inbox.expired(101) == Count(1, 100)
    assert inbox.waiting(101) == Count(7, 700) - Count(1, 100) - Count(2, 200)
    # Folding on one side only, or both, changes nothing.
    alice.fold(101, node.passed)
    assert Inbox(stored=(alice, bob), taken=node).expired(101) == Count(1, 100)
    node.fold(101, node.passed)
    again = parse(node.payload())
    assert Inbox(stored=(parse(alice.payload()), bob), taken=again).expired(300) == Count(3, 300)


def test_an_expired_letter_waits_until_the_node_reads_past_it() -> None:
    sender, node = Tally(), Tally()
    sender.add(Count(5, 500), 100)
    inbox = Inbox(stored=(sender,), taken=node)
    assert inbox.expired(200) == Count(5, 500)
    assert inbox.waiting(200) == Count(5, 500)  # still in the broker's queue
    node.passed = 101
    assert Inbox(stored=(sender,), taken=node).waiting(200) == Count()


def test_older_counts_are_bare_numbers_and_garbage_is_zero() -> None:
    assert parse(b"7").total == Count(7, 0)
    assert parse(b"").total == Count()
    assert parse(b"{not json").total == Count()
