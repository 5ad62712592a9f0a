"""The seen-cache (bounded, oldest forgotten) and the message cache IWANT is answered from."""

from __future__ import annotations

from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
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


@dataclass
class Missing:
    """A message announced (IHAVE) but not received yet: by whom, since when, how
    many times asked for."""

    topic: str
    since: float
    announcers: list[str] = field(default_factory=list)
    tries: int = 0
    #: Announcers asked for it (IWANT) that have not sent it.
    asked: list[str] = field(default_factory=list)


class WaitList:
    """Messages announced but not received, bounded (``size`` ids, 16 announcers each)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._missing: dict[str, Missing] = {}

    def __len__(self) -> int:
        return len(self._missing)

    def announced(self, message_id: str, topic: str, announcer: str, now: float) -> None:
        """``announcer`` has ``message_id`` (an IHAVE); the first announcement starts its
        timer."""
        missing = self._missing.get(message_id)
        if missing is None:
            if len(self._missing) >= self.size:
                return
            missing = self._missing[message_id] = Missing(topic, now)
        if announcer not in missing.announcers and len(missing.announcers) < 16:
            missing.announcers.append(announcer)

    def arrived(self, message_id: str) -> None:
        """The message came: stop waiting for it."""
        self._missing.pop(message_id, None)

    def due(self, now: float, timeout: float, alive: Callable[[str], bool],
            ) -> tuple[list[tuple[str, str, str]], int, Counter[str]]:
        """(announcer to ask, message id, topic) for each message waited for longer than
        ``timeout``, the next live announcer each round (3 rounds each); how many were
        given up; and, for those, the announcers asked that never sent it (a broken
        promise each: announcing messages one does not send fills this list, and an
        honest announcement that finds it full is not waited for)."""
        asks, gave_up, broken = [], 0, Counter[str]()
        for message_id, missing in list(self._missing.items()):
            if now - missing.since < timeout:
                continue
            live = [p for p in missing.announcers if alive(p)]
            if not live or missing.tries >= 3 * len(live):
                del self._missing[message_id]
                gave_up += 1
                broken.update(missing.asked)
                continue
            announcer = live[missing.tries % len(live)]
            missing.tries += 1
            missing.since = now
            if announcer not in missing.asked:
                missing.asked.append(announcer)
            asks.append((announcer, message_id, missing.topic))
        return asks, gave_up, broken
