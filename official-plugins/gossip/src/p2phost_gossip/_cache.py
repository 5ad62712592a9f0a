"""The seen-cache (bounded, oldest forgotten) and the message cache IWANT is answered from."""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Any


class SeenCache:
    """Message ids seen lately; at most ``size``, the oldest forgotten first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, message_id: object) -> bool:
        return message_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, message_id: str) -> bool:
        """Remember ``message_id``; False when it was already seen."""
        if message_id in self._ids:
            return False
        self._ids[message_id] = None
        if len(self._ids) > self.size:
            self._ids.popitem(last=False)
        return True


class MessageCache:
    """Whole messages of the last ``history`` heartbeats, by id (answers IWANT)."""

    def __init__(self, history: int) -> None:
        self._windows: deque[list[str]] = deque([[]], maxlen=history)
        self._frames: dict[str, dict[str, Any]] = {}

    def __len__(self) -> int:
        return len(self._frames)

    def put(self, message_id: str, frame: dict[str, Any]) -> None:
        """Keep ``frame`` until ``history`` heartbeats have passed."""
        if message_id not in self._frames:
            self._frames[message_id] = frame
            self._windows[-1].append(message_id)

    def get(self, message_id: str) -> dict[str, Any] | None:
        """The frame of ``message_id`` while it is cached."""
        return self._frames.get(message_id)

    def shift(self) -> None:
        """A heartbeat: forget the oldest window when the cache is full."""
        if len(self._windows) == self._windows.maxlen:
            for message_id in self._windows[0]:
                self._frames.pop(message_id, None)
        self._windows.append([])
