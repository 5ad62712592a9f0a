"""The span exporter stalled (a hung OTLP endpoint, a full disk): the queue stays
bounded, the loop never waits, and the node says so while it runs, not only at exit."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanKind

from p2phost._observability._spans import (
    Batcher,
    JsonLinesExporter,
    Spec,
    TracingError,
    exporters,
)


class Stuck(SpanExporter):
    """An exporter whose endpoint never answers (until released)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.entered.set()
        self.release.wait(10)
        return SpanExportResult.SUCCESS


SPEC = Spec("send t", SpanKind.PRODUCER, {"messaging.system": "p2phost"})


def ids(span: int) -> bytes:
    """A record's trace id (1) and span id, as the envelope carries them."""
    return (1).to_bytes(16) + span.to_bytes(8)


def test_a_stuck_exporter_drops_spans_and_says_so_while_running(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="p2phost.node")
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "8")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "4")
    stuck = Stuck()
    batcher = Batcher([stuck], Resource.create({}), InstrumentationScope("t"))
    try:
        for i in range(4):
            batcher.add((SPEC, ids(i + 1), b"", 1, 2, None))
        assert stuck.entered.wait(5)  # the thread is inside the export, stuck
        for i in range(10_000):  # a traced flood meanwhile
            batcher.add((SPEC, ids(i + 1), b"", 1, 2, None))
        assert len(batcher._queue) <= 8
        assert batcher.dropped >= 10_000 - 8
        warned = [r for r in caplog.records if "dropped" in r.getMessage()]
        assert warned, "nothing said spans are being dropped until the node exits"
        assert len(warned) <= 6  # a few, not one per span
        assert "fix:" in warned[0].getMessage()
    finally:
        stuck.release.set()
        batcher.shutdown()


def failed_on_a_full_disk(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """One span exported to /dev/full: the "spans failed" warnings it logged."""
    caplog.set_level(logging.WARNING, logger="p2phost.node")
    batcher = Batcher([JsonLinesExporter("/dev/full")], Resource.create({}),
                      InstrumentationScope("t"))
    try:
        batcher.add((SPEC, ids(1), b"", 1, 2, None))
        batcher.flush(5)
    finally:
        batcher.shutdown()
    failed = [r for r in caplog.records if "spans failed" in r.getMessage()]
    assert failed, "nothing said the export failed"
    return failed


def test_a_full_disk_says_what_failed_and_the_fix(caplog: pytest.LogCaptureFixture) -> None:
    failed = failed_on_a_full_disk(caplog)
    assert "fix:" in failed[0].getMessage()


def test_a_traces_file_that_cannot_be_opened_is_said_at_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "jsonl")
    monkeypatch.setenv("P2PHOST_TRACES_FILE", str(tmp_path / "no such dir" / "t.jsonl"))
    with pytest.raises(TracingError, match=r"P2PHOST_TRACES_FILE.*no such dir.*fix:"):
        exporters()


def test_an_export_failing_on_the_disk_is_one_line_not_a_traceback(
    caplog: pytest.LogCaptureFixture
) -> None:
    failed = failed_on_a_full_disk(caplog)
    assert failed[0].exc_info is None
    assert "No space left on device" in failed[0].getMessage()
    assert "/dev/full" in failed[0].getMessage()
