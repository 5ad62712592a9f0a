"""WarnedOnce: a line said once per (peer, topic), with what it remembers bounded."""

from __future__ import annotations

from p2phost._runtime._limited import WarnedOnce


def test_each_pair_is_warned_about_once_and_the_oldest_forgotten_first() -> None:
    warned = WarnedOnce(most=3)
    assert [warned.first(f"p{n}", "t") for n in range(3)] == [True] * 3
    assert not warned.first("p0", "t") and not warned.first("p2", "t")
    assert warned.first("p3", "t")  # a fourth pair: p0, the oldest, is forgotten
    assert len(warned) == 3
    assert warned.first("p0", "t") and not warned.first("p3", "t")
    assert warned.first("p1", "other topic")
