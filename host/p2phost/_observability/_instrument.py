"""Timing handlers and mailbox waits: the dispatcher calls one observer per handled
message (nothing is added to the hot path of a node whose metrics are off).

The histograms are plain bucket counts updated on the node's loop (a comparison, or a
bisect past the first bucket, and two additions per series, in closure variables:
prometheus-client's own histograms take a lock per bucket and cost several times more);
the collector reads them on the loop at each scrape. No
wrapper around the handler: the dispatcher reads the clock around the handler itself
(a coroutine layer per message cost more than the observations, benchmarks/instructions.py).
"""

from __future__ import annotations

import bisect
import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from prometheus_client.core import HistogramMetricFamily, Metric

from p2phost_sdk import Message

from .._runtime.messaging._dispatch import Dispatcher, Observe

#: Bucket bounds (seconds) for handler durations and mailbox waits: 100 µs to 10 s.
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
           0.5, 1.0, 2.5, 5.0, 10.0)


class Buckets:
    """One histogram series: counts per bucket (the last is +Inf) and the sum, plus
    what the dispatcher's observers count in their own variables (:func:`_observer`)."""

    __slots__ = ("counts", "readers", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0
        #: Each gives what an observer kept apart: (observations in the first bucket,
        #: the sum of all it observed).
        self.readers: list[Callable[[], tuple[int, float]]] = []

    def observe(self, value: float) -> None:
        """Count one observation."""
        self.counts[bisect.bisect_left(BUCKETS, value)] += 1
        self.total += value

    def cumulative(self) -> tuple[list[tuple[str, float]], float]:
        """Prometheus' cumulative buckets (``le`` -> count) and the sum."""
        counts, total = list(self.counts), self.total
        for read in self.readers:
            first, more = read()
            counts[0] += first
            total += more
        out, running = [], 0
        for bound, count in zip((*map(str, BUCKETS), "+Inf"), counts, strict=True):
            running += count
            out.append((bound, float(running)))
        return out, total


class Timings:
    """The node's histograms: handler duration by topic, mailbox wait by app."""

    def __init__(self) -> None:
        self.handler: dict[str, Buckets] = {}
        self.wait: dict[str, Buckets] = {}

    def instrument(self, dispatch: Dispatcher) -> None:
        """Time every route's handler and every mailbox's waits (before the node starts:
        acknowledged delivery takes its routes from the same table)."""
        timed: dict[str, Observe] = {}
        for topic, route in dispatch.routes.items():
            wait = self.wait.setdefault(route.mailbox.name, Buckets())
            if topic in dispatch.acknowledged:
                # Acknowledged delivery runs the handler inside its own work (retries,
                # the store's commit): only a wrapper sees the handler alone there.
                dispatch.routes[topic] = replace(
                    route, handler=self._timed(topic, route.handler))
                timed[topic] = _observer(wait, None)
            else:
                timed[topic] = _observer(wait, self.handler.setdefault(topic, Buckets()))
        dispatch.timed = timed

    def _timed(self, topic: str, handler: Callable[[Message], Awaitable[Any]]
               ) -> Callable[[Message], Awaitable[Any]]:
        buckets = self.handler.setdefault(topic, Buckets())
        clock = time.monotonic

        @functools.wraps(handler)  # keeps what the handler decorator marked on it
        async def timed(message: Message) -> Any:
            start = clock()
            try:
                return await handler(message)
            finally:
                buckets.observe(clock() - start)

        return timed

    def snapshot(self) -> dict[str, dict[str, tuple[list[tuple[str, float]], float]]]:
        """Every series' cumulative buckets and sum (taken on the node's loop)."""
        return {"handler": {t: b.cumulative() for t, b in self.handler.items()},
                "wait": {a: b.cumulative() for a, b in self.wait.items()}}


def _observer(wait: Buckets, handler: Buckets | None) -> Observe:
    """What the dispatcher calls once per handled message of a topic.

    Its counts of the first bucket (100 µs: most waits and handler runs of a busy node)
    and its sums are variables of this closure, read at scrape time through the series'
    ``readers``: a closure variable is the cheapest thing Python updates (half the
    bytecode of an item of a list or an attribute), and the bisect, a C call and the
    larger part of the cost, is made only past the first bucket."""
    wait_counts, bucket, first = wait.counts, bisect.bisect_left, BUCKETS[0]
    waits = handled = 0
    wait_sum = handled_sum = 0.0
    wait.readers.append(lambda: (waits, wait_sum))
    if handler is None:
        def waited(queued: float, started: float, ended: float) -> None:
            nonlocal waits, wait_sum
            took = started - queued
            if took <= first:
                waits += 1
            else:
                wait_counts[bucket(BUCKETS, took)] += 1
            wait_sum += took

        return waited
    counts = handler.counts
    handler.readers.append(lambda: (handled, handled_sum))

    def observe(queued: float, started: float, ended: float) -> None:
        nonlocal waits, wait_sum, handled, handled_sum
        took = started - queued
        if took <= first:
            waits += 1
        else:
            wait_counts[bucket(BUCKETS, took)] += 1
        wait_sum += took
        took = ended - started
        if took <= first:
            handled += 1
        else:
            counts[bucket(BUCKETS, took)] += 1
        handled_sum += took

    return observe


def timing_families(data: dict[str, dict[str, tuple[list[tuple[str, float]], float]]]
                    ) -> list[Metric]:
    """The histograms of a :meth:`Timings.snapshot`."""
    handler = HistogramMetricFamily("p2phost_handler_duration_seconds", "How long a handler "
                                    "ran, by topic (failures included).", labels=["topic"])
    for topic, (buckets, total) in data.get("handler", {}).items():
        handler.add_metric([topic], buckets, total)
    wait = HistogramMetricFamily("p2phost_mailbox_wait_seconds", "How long a message waited "
                                 "in its app's mailbox before its handler started.",
                                 labels=["app"])
    for app, (buckets, total) in data.get("wait", {}).items():
        wait.add_metric([app], buckets, total)
    return [handler, wait]
