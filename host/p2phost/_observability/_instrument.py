"""Timing handlers and mailbox waits, by sampling: about one message in ``[metrics]
timing-sample`` (16) of each topic is timed, at random, the first one always. Only the
histograms are sampled (their ``_count`` is the messages timed, docs/operations.md); the
message counters count every message (``DeliveryStats``).

With metrics on, a message costs one call: its route's ``stamp`` counts down to the next
message to time and stamps that one's queueing time (``Work.queued``); the dispatcher
reads the clock around the handler of a stamped item only, and calls its topic's
observer. A plain one-way message not timed goes into its mailbox as with metrics off
(a simple item: no ``Work``, no start or finish call). With metrics off, routes have no
stamp and nothing else is done. Timing every message (two clock reads and an observer
call each) cost about 5 % of a one-way message's instructions, the aim's whole budget
(benchmarks/instructions.py --metrics).

The histograms are plain bucket counts updated on the node's loop (prometheus-client's
own histograms take a lock per bucket); the collector reads them on the loop at each
scrape. No wrapper around the handler of an at-most-once topic: the dispatcher reads the
clock around the handler itself (a coroutine layer per message costs more).
"""

from __future__ import annotations

import bisect
import functools
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from prometheus_client.core import HistogramMetricFamily, Metric

from p2phost_sdk import Message

from .._runtime.messaging._dispatch import Dispatcher, Observe
from .._runtime.messaging._routes import Work

#: Bucket bounds (seconds) for handler durations and mailbox waits: 100 µs to 10 s.
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
           0.5, 1.0, 2.5, 5.0, 10.0)
#: Series' data as a snapshot gives it: (cumulative buckets ``le`` -> count, sum).
Series = tuple[list[tuple[str, float]], float]


class Buckets:
    """One histogram series: counts per bucket (the last is +Inf) and the sum."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        """Count one observation."""
        self.counts[bisect.bisect_left(BUCKETS, value)] += 1
        self.total += value

    def cumulative(self) -> Series:
        """Prometheus' cumulative buckets (``le`` -> count) and the sum."""
        out, running = [], 0
        for bound, count in zip((*map(str, BUCKETS), "+Inf"), self.counts, strict=True):
            running += count
            out.append((bound, float(running)))
        return out, self.total


def gaps(sample: int) -> Callable[[], int]:
    """Draws the number of messages to the next one timed: 1 to ``2 * sample - 1``, at
    random (``sample`` on average; random, so that no periodic pattern of the traffic,
    such as topics taking turns, is timed or missed systematically)."""
    span, draw = 2 * sample - 1, random.random
    return lambda: int(draw() * span) + 1


class Timings:
    """The node's histograms: handler duration by topic, mailbox wait by app."""

    def __init__(self, sample: int = 16) -> None:
        #: About one message in ``sample`` of each topic is timed.
        self.sample = max(1, sample)
        self.handler: dict[str, Buckets] = {}
        self.wait: dict[str, Buckets] = {}

    def instrument(self, dispatch: Dispatcher) -> None:
        """Time every route's handler and every mailbox's waits, sampled (before the node
        starts: acknowledged delivery takes its routes from the same table)."""
        for topic in list(dispatch.routes):
            self.instrument_topic(dispatch, topic)

    def instrument_topic(self, dispatch: Dispatcher, topic: str) -> None:
        """Time ``topic``'s route, sampled: at start, and for a route added later
        (``Node.add_handler``: a route without a stamp is never timed)."""
        route = dispatch.routes[topic]
        wait = self.wait.setdefault(route.mailbox.name, Buckets())
        if topic in dispatch.acknowledged:
            # Acknowledged delivery runs the handler inside its own work (retries,
            # the store's commit): only a wrapper sees the handler alone there.
            handler = self._timed(topic, route.handler)
            dispatch.timed[topic] = _observer(wait, None)
        else:
            handler = route.handler
            dispatch.timed[topic] = _observer(wait, self.handler.setdefault(topic, Buckets()))
        dispatch.routes[topic] = replace(route, handler=handler, stamp=self._stamp())

    def _stamp(self) -> Callable[[Work | None], float]:
        gap, clock = gaps(self.sample), time.monotonic
        left = 1  # the first message of a topic is timed: its series shows at once

        def stamp(item: Work | None) -> float:
            # (None: no Work yet, the dispatcher makes one for a timed plain message only)
            nonlocal left
            left -= 1
            if left:
                return 0.0
            left = gap()
            queued = clock()
            if item is not None:
                item.queued = queued
            return queued

        return stamp

    def _timed(self, topic: str, handler: Callable[[Message], Awaitable[Any]]
               ) -> Callable[[Message], Awaitable[Any]]:
        buckets = self.handler.setdefault(topic, Buckets())
        gap, clock = gaps(self.sample), time.monotonic
        left = 1

        async def run(message: Message) -> Any:
            start = clock()
            try:
                return await handler(message)
            finally:
                buckets.observe(clock() - start)

        @functools.wraps(handler)  # keeps what the handler decorator marked on it
        def timed(message: Message) -> Awaitable[Any]:
            # Not sampled: the handler's own coroutine, no layer around it.
            nonlocal left
            left -= 1
            if left:
                return handler(message)
            left = gap()
            return run(message)

        return timed

    def snapshot(self) -> dict[str, Any]:
        """Every series' cumulative buckets and sum, and the sampling (taken on the
        node's loop)."""
        return {"handler": {t: b.cumulative() for t, b in self.handler.items()},
                "wait": {a: b.cumulative() for a, b in self.wait.items()},
                "sample": self.sample}


def _observer(wait: Buckets, handler: Buckets | None) -> Observe:
    """What the dispatcher calls for each timed message of a topic."""
    if handler is None:
        def waited(queued: float, started: float, ended: float) -> None:
            wait.observe(started - queued)

        return waited

    def observe(queued: float, started: float, ended: float) -> None:
        wait.observe(started - queued)
        handler.observe(ended - started)

    return observe


def timing_families(data: dict[str, Any]) -> list[Metric]:
    """The histograms of a :meth:`Timings.snapshot`."""
    sample = int(data.get("sample", 1))
    sampled = (f" Sampled: about one message in {sample} of each topic is timed "
               "([metrics] timing-sample); the message counters count them all."
               if sample > 1 else "")
    handler = HistogramMetricFamily("p2phost_handler_duration_seconds", "How long a handler "
                                    "ran, by topic (failures included)." + sampled,
                                    labels=["topic"])
    series: dict[str, Series] = data.get("handler", {})
    for topic, (buckets, total) in series.items():
        handler.add_metric([topic], buckets, total)
    wait = HistogramMetricFamily("p2phost_mailbox_wait_seconds", "How long a message waited "
                                 "in its app's mailbox before its handler started." + sampled,
                                 labels=["app"])
    series = data.get("wait", {})
    for app, (buckets, total) in series.items():
        wait.add_metric([app], buckets, total)
    return [handler, wait]
