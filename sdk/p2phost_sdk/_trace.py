"""A trace context handed from the task that has it to a task that sends later.

While a handler runs, the sends it makes continue its message's trace: the node reads
the handler's span from a context variable. A send made from another task (a batching
or forwarding task that drains a queue the handler filled) has no such variable set,
and would start a trace of its own. :meth:`Messenger.trace_context` takes the context
where it is current, and :meth:`TraceContext.carry` makes it current again around the
later send (docs/operations.md, "Traces"; the gossip plugin does this for its forwards).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any


@dataclass(frozen=True, slots=True)
class TraceContext:
    """One trace context, from :meth:`p2phost_sdk.Messenger.trace_context`; made by the
    node (which knows how to make it current), opaque to plugins but for its ids."""

    #: The context as the envelope carries it: trace id (16 bytes), span id (8), flags (1).
    data: bytes
    #: Make ``data`` the current context of the calling task; returns what ``leave`` takes.
    enter: Callable[[bytes], Any]
    #: Undo one ``enter``.
    leave: Callable[[Any], None]

    @property
    def trace_id(self) -> str:
        """The trace id, as 32 hex digits (what span exporters show)."""
        return self.data[:16].hex()

    @property
    def sampled(self) -> bool:
        """Whether the trace is recorded (else only its context travels on)."""
        return bool(self.data[24] & 1) if len(self.data) > 24 else False

    def carry(self) -> _Carried:
        """A context manager: sends made inside it (in this task) continue this trace,
        as a handler's do. Usable any number of times, from any task."""
        return _Carried(self)


class _Carried:
    """One use of a :class:`TraceContext` (its own token: uses in several tasks at once
    do not mix)."""

    __slots__ = ("_context", "_token")

    def __init__(self, context: TraceContext) -> None:
        self._context = context
        self._token: Any = None

    def __enter__(self) -> None:
        self._token = self._context.enter(self._context.data)

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._context.leave(self._token)
