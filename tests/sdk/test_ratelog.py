"""RateLimitedLog: a flood of one warning logs a few lines and a count, never a line each."""

from __future__ import annotations

import logging

import pytest

from p2phost_sdk import RateLimitedLog


def test_a_flood_logs_its_burst_then_one_line_with_the_count(
        caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    log = RateLimitedLog(logging.getLogger("p2phost.test.ratelog"), "refused records",
                         burst=2, window=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, "p2phost.test.ratelog"):
        for i in range(50):
            log.warning("refused record %d", i, reason="too large")
        log.tick()  # the window is not over: nothing yet
        assert [r.getMessage() for r in caplog.records] == ["refused record 0",
                                                            "refused record 1"]
        now[0] += 10.0
        log.warning("refused record %d", 50)
    assert [r.getMessage() for r in caplog.records][2:] == [
        "48 more refused records in the last 10s were not logged (51 in all)",
        "refused record 50"]
    assert log.count == 51 and log.reasons == {"too large": 50, "other": 1}


def test_the_first_line_carries_the_traceback_and_is_marked_limited(
        caplog: pytest.LogCaptureFixture) -> None:
    log = RateLimitedLog(logging.getLogger("p2phost.test.ratelog"), "failures", burst=1)
    with caplog.at_level(logging.WARNING, "p2phost.test.ratelog"):
        for i in range(3):
            try:
                raise ValueError(i)
            except ValueError as exc:
                log.warning("failed %d", i, exc_info=exc)
        log.flush()
    first, summary = caplog.records
    assert first.exc_info is not None and str(first.exc_info[1]) == "0"
    # Limited already (by a finer key than its template): a RepeatLimit lets it through.
    assert getattr(first, "rate_limited", False) and getattr(summary, "rate_limited", False)
    assert summary.getMessage() == "2 more failures in the last 10s were not logged (3 in all)"
