"""Apps' durable state: the :class:`p2phost_sdk.Store` an acknowledged handler gets.

A handler's writes stay in its :class:`Session` until it returns; they are then
committed in the same transaction as the message's dedupe mark or its removal from
the delayed-retry queue, so they happen exactly once per message. Writes submitted
but not yet committed (the commit runs at the end of the loop turn) are visible to the
handlers that run in between, as if committed.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any

from p2phost_sdk import CodecError

from ._store import Op

# One encoder for every write: json.dumps with options builds a new one per call.
_JSON = json.JSONEncoder(allow_nan=False, separators=(",", ":"))


class AppState:
    """Every app's state in the delivery database, with the writes not yet committed."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        # (app, key) -> (version, JSON text or None for deleted), until committed
        self._pending: dict[tuple[str, str], tuple[int, str | None]] = {}
        self._version = 0

    def read(self, app: str, key: str) -> str | None:
        """The JSON text of ``key`` of ``app``, or None."""
        pending = self._pending.get((app, key))
        if pending is not None:
            return pending[1]
        row = self.db.execute("SELECT value FROM app_state WHERE app = ? AND key = ?",
                              (app, key)).fetchone()
        return None if row is None else str(row[0])

    def session(self, app: str) -> Session:
        """A new session for one handler call of ``app``."""
        return Session(self, app)

    def commit(self, session: Session) -> tuple[Op, Callable[[], None]]:
        """The write of ``session``'s changes, and what to call once it is committed (or
        rolled back): the changes are visible as pending until then."""
        app, writes = session.app, dict(session.writes)
        self._version += 1
        version = self._version
        for key, text in writes.items():
            self._pending[(app, key)] = (version, text)

        def op(db: sqlite3.Connection) -> None:
            for key, text in writes.items():
                if text is None:
                    db.execute("DELETE FROM app_state WHERE app = ? AND key = ?", (app, key))
                else:
                    db.execute("INSERT OR REPLACE INTO app_state (app, key, value) "
                               "VALUES (?, ?, ?)", (app, key, text))

        def settle() -> None:
            for key in writes:
                if self._pending.get((app, key), (0, None))[0] == version:
                    del self._pending[(app, key)]

        return op, settle


class Session:
    """One handler call's view of its app's state (a :class:`p2phost_sdk.Store`)."""

    def __init__(self, state: AppState, app: str) -> None:
        self.state = state
        self.app = app
        #: key -> JSON text, or None for deleted.
        self.writes: dict[str, str | None] = {}

    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key`` (with this call's own writes), or ``default``."""
        text = self.writes[key] if key in self.writes else self.state.read(self.app, key)
        return default if text is None else json.loads(text)

    def put(self, key: str, value: Any) -> None:
        """Set ``key`` when the handler succeeds (``value`` must be JSON data)."""
        try:
            self.writes[key] = _JSON.encode(value)
        except (TypeError, ValueError) as exc:
            raise CodecError(f"store value for {key!r} is not JSON data: {exc}") from exc

    def delete(self, key: str) -> None:
        """Remove ``key`` when the handler succeeds."""
        self.writes[key] = None
