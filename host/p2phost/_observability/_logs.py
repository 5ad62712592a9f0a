"""Logs for machines and for bad days: ``--log-format json`` (one object per line, with
the node, peer, topic and message id where known) and repeated warnings rate-limited with
a count, in both formats, for the CLI (:func:`configure`) and for nodes started from a
library (:func:`limit_repeats`).

What a line is about comes from a context variable: the node's name is bound where the
node runs, and the dispatcher binds each message's peer, topic and id while it processes
it (handler, reply and the lines about both), then resets the variable, so a binding
never leaks to another message.
"""

from __future__ import annotations

import atexit
import contextvars
import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the CLI imports this module first thing: keep it light
    from .._runtime.messaging._apps import Process
    from .._runtime.messaging._dispatch import Dispatcher
    from .._runtime.messaging._routes import Work

#: What the current log lines are about (node, peer, topic, message_id, trace_id).
_CONTEXT: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar(
    "p2phost_log_context", default={})  # noqa: B039  (never mutated: bind() replaces it)
FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def bind(**fields: str) -> None:
    """Add ``fields`` to what this task's (and its children's) log lines are about."""
    _CONTEXT.set({**_CONTEXT.get(), **fields})


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, the bound fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(), "logger": record.name,
            "message": record.getMessage(), **_CONTEXT.get(),
        }
        # What a line logged outside its message's handler is about (a dead letter's
        # commit, say): the fields its RateLimitedLog call named.
        if (fields := getattr(record, "fields", None)) is not None:
            line.update(fields)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class RepeatLimit(logging.Filter):
    """Lets the first ``burst`` warnings of one kind (logger and message template) through
    each ``window`` seconds; the rest are counted and reported in one line with their
    count when that kind comes up again after the window (or at exit: :meth:`flush`)."""

    def __init__(self, burst: int = 10, window: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.burst, self.window, self.clock = burst, window, clock
        # (logger, template) -> [window start, passed, suppressed]
        self._kinds: dict[tuple[str, str], list[float]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        # A summary, or a line a RateLimitedLog limited already (per peer and topic: a
        # finer key than the template, so one peer's flood does not hide another's).
        if record.levelno < logging.WARNING or getattr(record, "summary", False) \
                or getattr(record, "rate_limited", False):
            return True
        key = (record.name, str(record.msg))
        now = self.clock()
        state = self._kinds.get(key)
        if state is None or now - state[0] >= self.window:
            if state is not None and state[2]:
                self._report(key, int(state[2]))
            if len(self._kinds) >= 1024:  # bounded: forget the oldest kinds
                self._kinds.pop(next(iter(self._kinds)))
            state = self._kinds[key] = [now, 0, 0]
        if state[1] < self.burst:
            state[1] += 1
            return True
        state[2] += 1
        return False

    def _report(self, key: tuple[str, str], count: int) -> None:
        logging.getLogger(key[0]).warning(
            "%d more warnings like %r in %gs were not logged", count, key[1][:120],
            self.window, extra={"summary": True, "repeated": count})

    def flush(self) -> None:
        """Report every kind whose warnings were held back."""
        for key, state in list(self._kinds.items()):
            count, state[2] = int(state[2]), 0
            if count:
                self._report(key, count)


class _Redacting(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler whose lines name no broker password (docs/transports.md)."""

    def format(self, record: logging.LogRecord) -> str:
        from .._redact import redact

        return redact(super().format(record))


def configure(level: int, fmt: str) -> RepeatLimit:
    """The CLI's logging: ``fmt`` is ``text`` or ``json``; repeats limited in both; a
    password in an address is left out of every line."""
    handler = _Redacting()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    limit = RepeatLimit()
    handler.addFilter(limit)
    logging.basicConfig(level=level, handlers=[handler])
    atexit.register(limit.flush)  # runs before logging's own exit hook (registered first)
    return limit


#: The repeat limit nodes put on p2phost's loggers when nothing at the root limits
#: repeats (a library's node): one per process, as the loggers are.
_NODE_LIMIT = RepeatLimit()
_flush_at_exit = False


def limit_repeats() -> None:
    """Rate-limit the repeated warnings of every ``p2phost`` logger (the host's and its
    plugins') for a node started from a library, whose logging is the app's: unless a
    handler of the root logger limits repeats already (the CLI's :func:`configure`, or
    the app's own :class:`RepeatLimit`), then it steps aside. A filter on a logger sees
    only that logger's own records, so it goes on each; a logger made after the node
    started (a plugin imported later) gets it at the next node's start."""
    global _flush_at_exit
    at_root = any(isinstance(f, RepeatLimit)
                  for h in logging.getLogger().handlers for f in h.filters)
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and (name == "p2phost"
                                                   or name.startswith("p2phost.")):
            if at_root:
                logger.removeFilter(_NODE_LIMIT)
            else:
                logger.addFilter(_NODE_LIMIT)  # once: addFilter skips a filter it has
    if not at_root and not _flush_at_exit:
        atexit.register(_NODE_LIMIT.flush)
        _flush_at_exit = True


def flush_repeats() -> None:
    """Report what :func:`limit_repeats` held back so far (a node closing)."""
    _NODE_LIMIT.flush()


def with_context(dispatch: Dispatcher) -> None:
    """Bind each message's peer, topic and id while it is processed (json logs only)."""
    dispatch.wrap_processing(_bound)


def _bound(process: Process) -> Process:
    async def bound(peer: str, item: Work) -> None:
        message = item.message
        if message is None:  # a lifecycle call
            return await process(peer, item)
        # Reset afterwards, even what the handler bound itself: the task's context is
        # then as it was, so the mailbox may run the peer's next item in the same task
        # (it starts a fresh task for each item whose handler left a change behind).
        token = _CONTEXT.set({**_CONTEXT.get(), "peer": message.sender,
                              "topic": message.topic, "message_id": message.id})
        try:
            return await process(peer, item)
        finally:
            _CONTEXT.reset(token)

    return bound


def json_enabled() -> bool:
    """Whether the root logger writes JSON (the node then binds handler context)."""
    return any(isinstance(h.formatter, JsonFormatter) for h in logging.getLogger().handlers)
