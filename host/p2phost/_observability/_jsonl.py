"""p2phost's ``jsonl`` span exporter: each span as one JSON line in a file.

The node's records (``_spans.Record``) are written without any SDK object: each span
name has the constant pieces of its line made once (``Spec.lines``), so a span costs
one f-string with its ids in hex and its two times. Building the SDK's ``ReadableSpan`` and
its JSON for each span cost about 3 µs, more than the message it describes; the lines
are the same (a test compares them), and SDK spans still take :func:`span_line`.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import IO, TYPE_CHECKING

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util import ns_to_iso_str

if TYPE_CHECKING:
    from ._spans import Record, Spec

_LINES_PER_WRITE = 100
_UNSET, _NO_EVENTS = '{"status_code": "UNSET"}', "[]"
#: Three digits each, for a time's microseconds (a 06d format spec costs twice as much).
_D3 = tuple(f"{n:03d}" for n in range(1000))
_BIT_64 = 1 << 64
#: What the common lines hold between the trace id and the span id (``Spec.lines``),
#: and the character they hold there instead until their text is written: one
#: ``replace`` of the bytes of 100 lines costs less than a piece of each line's f-string, and
#: ``bytes.hex(_SEP, -16)`` puts it between the ids' digits (slices of one hex string
#: cost more). JSON text has no raw control character: ``json.dumps`` escapes them.
_SPAN_ID, _SEP = '", "span_id": "0x', "\x00"
_SPAN_ID_BYTES, _SEP_BYTES = _SPAN_ID.encode(), _SEP.encode()


class TracingError(Exception):
    """The OTEL_* variables name an exporter that cannot be loaded."""


class ExportFailed(Exception):
    """An exporter could not write (a full disk): said in one line, no traceback."""


class _Iso:
    """``ns_to_iso_str``'s text (to the microsecond, truncated) without its ``Z``, with
    the date and time to the second made once a second: datetime formatting costs more
    than the rest of a span's line. :attr:`base` is the microsecond that second starts
    at, :attr:`prefix` its text with the dot: a time ``us`` microseconds after
    the epoch with ``0 <= us - base < 1_000_000`` is ``f"{prefix}{us - base:06d}"``
    (the exporter does that itself)."""

    def __init__(self) -> None:
        self.base, self.prefix = -(1 << 62), ""

    def __call__(self, ns: int) -> str:
        us = ns // 1000
        if not 0 <= us - self.base < 1_000_000:
            second = us // 1_000_000
            self.base = second * 1_000_000
            self.prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second))
        return f"{self.prefix}{us - self.base:06d}"


def _quick(pieces: tuple[tuple[str, ...], tuple[str, ...]]
           ) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """A spec's line pieces (``Spec.lines``) for a span that did not fail: its status
    and events joined to the pieces around them (a numbered message id's quotes
    too), fewer pieces for the f-string; the piece between the trace id and the span
    id (the same in every line) left out: the exporter puts :data:`_SEP` there and
    replaces it in the whole written text at once. Third, a child span's: the quotes
    and ``0x`` around its parent's id joined to the pieces too."""
    a, b, c, d, e, f, g, h = pieces[0]
    assert b == _SPAN_ID, b
    one = (a, c, d, e, f"{f}{_UNSET}{g}{_NO_EVENTS}{h}")
    child = (a, f'{c}"0x', f'"{d}', e, one[4])
    a, b, c, d, e, f, g, h, i, j = pieces[1]
    return one, (a, c, d, e, f'{f}{_UNSET}{g}"', f'"{h}', f"{i}{_NO_EVENTS}{j}"), child


def span_line(span: ReadableSpan) -> str:
    """One SDK span as a JSON line (the fields and formats of the SDK's ``to_json``, the
    resource reduced to its ``service.name``)."""
    context, parent = span.get_span_context(), span.parent
    status: dict[str, str] = {"status_code": span.status.status_code.name}
    if span.status.description:
        status["description"] = span.status.description
    return json.dumps({
        "name": span.name,
        "context": {"trace_id": f"0x{context.trace_id:032x}",
                    "span_id": f"0x{context.span_id:016x}"} if context else None,
        "kind": str(span.kind),
        "parent_id": None if parent is None else f"0x{parent.span_id:016x}",
        "start_time": ns_to_iso_str(span.start_time) if span.start_time else None,
        "end_time": ns_to_iso_str(span.end_time) if span.end_time else None,
        "status": status,
        "attributes": dict(span.attributes or {}),
        "events": [{"name": e.name, "timestamp": ns_to_iso_str(e.timestamp),
                    "attributes": dict(e.attributes or {})} for e in span.events],
        "service": span.resource.attributes.get("service.name"),
    }, default=str)


class JsonLinesExporter(SpanExporter):
    """``OTEL_TRACES_EXPORTER=jsonl``: each span as one JSON line appended to
    ``P2PHOST_TRACES_FILE`` (default ``traces.jsonl``); the same line for the node's
    records (:meth:`export_records`) as for SDK spans (:func:`span_line`)."""

    def __init__(self, path: str | None = None) -> None:
        self._path = path or os.environ.get("P2PHOST_TRACES_FILE", "traces.jsonl")
        # Unbuffered bytes: a batch is one write (a text file's encoder and buffer cost
        # as much as making the lines).
        self._file: IO[bytes] | None = None
        try:  # a path that cannot be written is said at start, not at every batch
            self._file = open(self._path, "ab", buffering=0)
        except OSError as exc:
            raise TracingError(
                f"P2PHOST_TRACES_FILE={self._path!r} cannot be written ({exc.strerror}); "
                "fix: a file in an existing directory this process may write") from exc
        self._lock = threading.Lock()
        self._iso = _Iso()
        #: The specs table :attr:`_quick` holds the pieces of (by spec number).
        self._quick_for: Sequence[Spec] | None = None
        self._quick: list[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = []
        #: What :meth:`_stamps` made, and the second it made it for (none yet: no time
        #: is within the first base, so the empty list is never read).
        self._stamps_base, self._stamps_text = self._iso.base, list[str]()

    def _write(self, lines: list[str], sep: bool = False) -> None:
        """Write ``lines`` (``sep``: with :data:`_SEP` to replace)."""
        with self._lock:
            if self._file is None:
                self._file = open(self._path, "ab", buffering=0)
            try:
                # In pieces of about 40 kB: a string of a whole batch's lines is large
                # enough for malloc to map and unmap it each time (page faults: more CPU
                # than the writes).
                for at in range(0, len(lines), _LINES_PER_WRITE):
                    text = "".join(lines[at:at + _LINES_PER_WRITE]).encode()
                    # (bytes.replace: a tenth of str.replace's cost here)
                    data = memoryview(text.replace(_SEP_BYTES, _SPAN_ID_BYTES) if sep else text)
                    while data:  # a raw write may take part of it
                        data = data[self._file.write(data) or 0:]
            except OSError as exc:
                # A full disk: what the buffer holds is lost, not written half later;
                # the next batch opens the file again.
                self._discard()
                raise ExportFailed(f"{self._path}: {exc.strerror or exc}") from exc

    def _discard(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            with contextlib.suppress(OSError):
                file.close()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self._write([span_line(span) + "\n" for span in spans])
        return SpanExportResult.SUCCESS

    def export_records(self, records: Sequence[Record], service: str,
                       specs: Sequence[Spec] = ()) -> None:
        """The node's records (their specs numbered in ``specs``), each span a line
        joined from its name's pieces.

        The common record (spec by number, nothing failed, a numbered message) takes one
        f-string per span from pieces with the status and events already in them, and
        its times as microseconds past the second of the batch's last time (integer
        operations on small numbers: the decimal text of a time in nanoseconds costs
        more), each the text of its millisecond in that second (:meth:`_stamps`) and
        three digits; any other record takes :meth:`_record`."""
        if self._quick_for is not specs:  # another table: its pieces are made anew
            self._quick_for, self._quick = specs, []
        quick, iso, lines = self._quick, self._iso, list[str]()
        append, base = lines.append, iso.base
        stamps = self._stamps()
        for record in records:
            ref = record[0]
            if type(ref) is not int or record[5] is not None:
                self._record(record, service, specs, append)
                if base != iso.base:
                    base, stamps = iso.base, self._stamps()
                continue
            while len(quick) <= ref:  # the table only grows: its new specs' pieces
                quick.append(_quick(specs[len(quick)].lines(service)))
            if len(record) == 6:  # a send
                _, ids, parent, start, end, _ = record
                first = start // 1000 - base
                last = end // 1000 - base
                if not 0 <= first <= last < 1_000_000:  # another second: set by iso()
                    self._record(record, service, specs, append)
                    base, stamps = iso.base, self._stamps()
                    continue
                a, c, d, e, f = quick[ref][0]
                up = f'"0x{parent.hex()}"' if parent else "null"
                append(f"{a}{ids.hex(_SEP, -16)}{c}{up}{d}{stamps[first // 1000]}"
                       f"{_D3[first % 1000]}{e}{stamps[last // 1000]}{_D3[last % 1000]}{f}")
                continue
            # A receipt: its handle span's fields (and its reply span's) follow.
            if len(record) == 13:  # (a one-way message's: unpacked with no slice)
                _, ids, parent, start, end, _, number, attempt, child, child_id, \
                    child_start, child_end, child_error = record
                reply = child
            else:
                _, ids, parent, start, end, _, number, attempt, child, child_id, \
                    child_start, child_end, child_error = record[:13]
                reply = record[13]
            first = start // 1000 - base
            last = end // 1000 - base
            if child_error is not None or type(number) is not int or type(child) is not int \
                    or type(reply) is not int or not 0 <= first <= last < 1_000_000:
                self._record(record, service, specs, append)
                base, stamps = iso.base, self._stamps()
                continue
            while len(quick) <= child or len(quick) <= reply:
                quick.append(_quick(specs[len(quick)].lines(service)))
            hexed = ids.hex(_SEP, -16)
            trace = hexed[:33]  # (with the separator the children's lines put after it)
            a, c, d, e, f, g, h = quick[ref][1]
            started = f"{stamps[first // 1000]}{_D3[first % 1000]}"
            ended = f"{stamps[last // 1000]}{_D3[last % 1000]}"
            up = f'"0x{parent.hex()}"' if parent else "null"
            # hex() of the number with a 65th bit set: its 16 digits, zeros kept, after "0x1"
            # (a format spec such as 016x costs twice as much).
            if child_start == start and child_end == end and len(record) == 13:
                # A one-way message's: its handle span at the same times, in one string.
                a2, c2, d2, e2, f2 = quick[child][2]
                append(f"{a}{hexed}{c}{up}{d}{started}{e}{ended}{f}"
                       f"{hex(number | _BIT_64)[3:]}{g}{attempt}{h}{a2}{trace}"
                       f"{child_id.hex()}{c2}{hexed[33:]}{d2}{started}{e2}{ended}{f2}")
                continue
            append(f"{a}{hexed}{c}{up}{d}{started}{e}{ended}{f}"
                   f"{hex(number | _BIT_64)[3:]}{g}{attempt}{h}")
            # The handle span, a child of the receive span, has its times (a one-way
            # message's; a request's ends before its reply).
            a, c, d, e, f = quick[child][2]
            up = hexed[33:]
            if child_start != start or child_end != end:
                first = child_start // 1000 - base
                last = child_end // 1000 - base
                if 0 <= first <= last < 1_000_000:
                    started = f"{stamps[first // 1000]}{_D3[first % 1000]}"
                    ended = f"{stamps[last // 1000]}{_D3[last % 1000]}"
                else:
                    started, ended = iso(child_start), iso(child_end)
                    base, stamps = iso.base, self._stamps()
            append(f"{a}{trace}{child_id.hex()}{c}{up}{d}{started}{e}{ended}{f}")
            if len(record) > 13:  # the reply span (its times as the handle span's above:
                # a loop over both children cost a one-way receipt 5 % more)
                _, _, _, _, _, _, _, _, _, _, _, _, _, child, child_id, child_start, \
                    child_end = record
                a, c, d, e, f = quick[child][2]
                first = child_start // 1000 - base
                last = child_end // 1000 - base
                if 0 <= first <= last < 1_000_000:
                    started = f"{stamps[first // 1000]}{_D3[first % 1000]}"
                    ended = f"{stamps[last // 1000]}{_D3[last % 1000]}"
                else:
                    started, ended = iso(child_start), iso(child_end)
                    base, stamps = iso.base, self._stamps()
                append(f"{a}{trace}{child_id.hex()}{c}{up}{d}{started}{e}{ended}{f}")
        self._write(lines, True)

    def _stamps(self) -> list[str]:
        """The text of each millisecond of :attr:`_iso`'s second (made when it moves to
        another: once a second while the node is busy)."""
        iso = self._iso
        if self._stamps_base != iso.base:
            self._stamps_base = iso.base
            self._stamps_text = [iso.prefix + digits for digits in _D3]
        return self._stamps_text

    def _record(self, record: Record, service: str, specs: Sequence[Spec],
                append: Callable[[str], None]) -> None:
        """The lines of any record (a failure, a spec not numbered, a time in another
        second...)."""
        iso = self._iso
        ref, ids, parent, start, end, error = record[:6]
        spec = specs[ref] if isinstance(ref, int) else ref
        hexed = ids.hex()
        trace, span_id = hexed[:32], hexed[32:]
        started, ended = iso(start), iso(end)
        status, events = (_UNSET, _NO_EVENTS) if error is None else _outcome(error, iso)
        up = f'"0x{parent.hex()}"' if parent else "null"
        if len(record) == 6:  # a send
            a, b, c, d, e, f, g, h = spec.lines(service)[0]
            append(f"{a}{trace}{b}{span_id}{c}{up}{d}{started}{e}{ended}{f}{status}{g}"
                   f"{events}{h}")
            return
        a, b, c, d, e, f, g, h, i, j = spec.lines(service)[1]
        number = record[6]
        number = f'"{number:016x}"' if type(number) is int else json.dumps(number)
        append(f"{a}{trace}{b}{span_id}{c}{up}{d}{started}{e}{ended}{f}{status}{g}"
               f"{number}{h}{record[7]}{i}{events}{j}")
        up = f'"0x{span_id}"'  # the parent of the handle and reply spans
        for at in (8, 13) if len(record) > 13 else (8,):
            ref, child_id, child_start, child_end = record[at:at + 4]
            child = specs[ref] if isinstance(ref, int) else ref
            child_error = record[12] if at == 8 else None
            status, events = (_UNSET, _NO_EVENTS) if child_error is None else \
                _outcome(child_error, iso)
            a, b, c, d, e, f, g, h = child.lines(service)[0]
            append(f"{a}{trace}{b}{child_id.hex()}{c}{up}{d}{iso(child_start)}{e}"
                   f"{iso(child_end)}{f}{status}{g}{events}{h}")

    def shutdown(self) -> None:
        with self._lock:
            self._discard()  # a failed last write was reported by the exporting thread


def _outcome(error: tuple[str, dict[str, object] | None, int], iso: _Iso
             ) -> tuple[str, str]:
    """A failed span's status and events as JSON."""
    status = json.dumps({"status_code": "ERROR", "description": error[0]})
    events = _NO_EVENTS if error[1] is None else json.dumps(
        [{"name": "exception", "timestamp": iso(error[2]) + "Z", "attributes": error[1]}],
        default=str)
    return status, events
