"""Group commit for the delivery database: many writes in one transaction, never a
long wait on the event loop.

Writes are submitted with a callback to run once they are committed. At the end of the
loop turn, everything submitted so far is committed in one transaction; what is
submitted while that commit runs forms the next one. So a burst of messages, or many
senders at once, cost one commit, and each ``send()`` still returns only once its
message is committed.

Where the transaction runs:

* a small batch of *quick* writes (an outbox row, an acknowledgement's deletion, a
  handler's outcome) is committed by the loop itself when the writer thread is idle:
  in WAL mode with ``synchronous=NORMAL`` that is a write to the WAL file, no fsync,
  tens of microseconds, far less than the two thread hand-offs it saves. Its
  connection never waits for a lock (another process's ``p2phost dead purge``: the
  batch goes to the thread instead) and never checkpoints (that fsyncs: the thread
  does it). Loop commits that take over a millisecond (the median of a few), or two
  of a few over five milliseconds (the disk, or a machine so busy that it preempts
  the loop mid-commit again and again), send every batch to the thread for a second.
  One such commit does not: on a machine that is merely busy the hand-offs would cost
  the sender more than the commits (35 to 60 µs of CPU per message, where the commit
  is about 20);
* everything else (a dedupe prune, claiming rows, requeued dead letters) and any batch
  submitted while the thread is busy is committed by the writer thread, with a
  connection of its own.

Each transaction starts with the folds of the journals (:attr:`Committer.gathers`):
what they made durable since the last one, so every write submitted after a send or a
handler's outcome is committed after it.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from typing import Any, NamedTuple

from ._store import Op, StoreError, transaction

log = logging.getLogger("p2phost.delivery")
#: Seconds a lazy write waits for a transaction to ride with.
LAZY = 0.02
#: Quick writes touching at most this many rows are committed on the loop at once
#: (a row by key is a few microseconds)...
_LOOP_ROWS = 32
#: ...and loop commits slower than _LOOP_LIMIT seconds (the median of each _LOOP_SAMPLE),
#: or two of a sample slower than _LOOP_STALL, send every batch to the thread...
_LOOP_LIMIT, _LOOP_SAMPLE, _LOOP_STALL = 0.001, 16, 0.005
#: ...for this long (seconds).
_LOOP_PAUSE = 1.0
#: Loop commits between two checkpoints (by the writer thread).
_CHECKPOINT_EVERY = 500


#: What :attr:`Committer.gather` returns: a write, its callbacks, and its rows.
Gathered = tuple[Op, Callable[[], None], Callable[[], None], int]


class _Entry(NamedTuple):
    op: Op
    then: Callable[[], None] | None
    failed: Callable[[], None] | None
    quick: bool
    rows: int


class Committer:
    """Commits submitted writes, many in one transaction, on the loop or in a writer
    thread (see the module's docstring).

    ``op(db)`` runs in the writer thread or on the loop (it may touch only ``db`` and
    its own data); ``then`` callbacks run on the loop after the commit, in order; when
    the transaction fails the batch is rolled back and ``failed`` callbacks run instead
    (what they stood for, e.g. an acknowledgement, is then not given, so the message
    comes again).
    """

    def __init__(self, db: sqlite3.Connection, writer: sqlite3.Connection,
                 quick: sqlite3.Connection | None = None) -> None:
        #: The loop's connection, for reads.
        self.db = db
        self._writer = writer
        # The loop's connection for quick writes: waits for no lock, never checkpoints.
        self._quick = quick
        if quick is not None:
            quick.execute("PRAGMA busy_timeout=0")
            quick.execute("PRAGMA wal_autocheckpoint=0")
        self._quick_after = 0.0
        self._loop_costs: list[float] = []
        self._loop_stalls = 0
        self._since_checkpoint = 0
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="p2phost-delivery-writer")
        self._ops: list[_Entry] = []
        self._handle: asyncio.Handle | None = None
        self._later: asyncio.TimerHandle | None = None
        self._later_at = 0.0
        # When the earliest write that may wait is due (loop time; None: no such write).
        self._due: float | None = None
        self._busy = False
        self._urgent = False
        self._idle: asyncio.Event | None = None
        self._closed = False
        #: Transactions committed, and writes in them (group commit: writes >> commits).
        self.commits = 0
        self.writes = 0
        #: Of those transactions, how many the loop committed itself.
        self.loop_commits = 0
        #: Called on the loop as each transaction starts, in order: a write to put first
        #: in it (a journal's fold: ``(op, then, failed, rows)``), or None.
        self.gathers: list[Callable[[], Gathered | None]] = []

    def submit(self, op: Op, then: Callable[[], None] | None = None,
               failed: Callable[[], None] | None = None, *, wait: float = 0.0,
               quick: bool = False, rows: int = 1) -> None:
        """Run ``op`` in the next transaction, then ``then`` (or ``failed``).

        A write nobody waits for at once (deleting an acknowledged message: :data:`LAZY`;
        a handler's outcome, whose ACK may wait a millisecond) starts no transaction of
        its own for ``wait`` seconds: it rides with the next one, or with the writes
        that come meanwhile. A ``quick`` write is ``rows`` rows by key: the loop may
        commit it itself.
        """
        if self._closed:
            if failed is not None:
                failed()
            return
        self._ops.append(_Entry(op, then, failed, quick, rows))
        loop = asyncio.get_running_loop()
        if wait <= 0:
            self._urgent = True
        elif self._due is None or loop.time() + wait < self._due:
            self._due = loop.time() + wait
        if self._busy:
            return
        if wait > 0:
            self._wait_for_company()
        elif self._handle is None:
            # Wait for the rest of this loop turn: its writes join the same transaction.
            self._handle = asyncio.get_running_loop().call_soon(self._start)

    def want(self, wait: float = 0.0) -> None:
        """Start a transaction within ``wait`` seconds even if nothing else is written
        (for the folds of :attr:`gathers`)."""
        self.submit(_nothing, wait=wait, quick=True, rows=0)

    def _wait_for_company(self) -> None:
        """Start the next transaction when the earliest waiting write is due (unless an
        urgent one starts it sooner)."""
        if self._handle is not None or self._due is None:
            return
        if self._later is not None:
            if self._later_at <= self._due:
                return
            self._later.cancel()
        # uvloop's timer handles have no when(): the time is kept here.
        self._later_at = self._due
        self._later = asyncio.get_running_loop().call_at(self._due, self._start)

    def write(self, op: Op, *, quick: bool = False) -> asyncio.Future[Any]:
        """Run ``op`` in the next transaction; the future has its result once committed."""
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        result: list[Any] = []

        def run(db: sqlite3.Connection) -> None:
            result.append(op(db))

        def failed() -> None:
            if not done.done():
                done.set_exception(StoreError("the delivery database could not be written "
                                              "(see the log)"))

        def then() -> None:
            if not done.done():
                done.set_result(result[0] if result else None)

        self.submit(run, then, failed, quick=quick)
        return done

    def _start(self) -> None:
        self._handle = None
        if self._later is not None:
            self._later.cancel()
            self._later = None
        if self._busy or not self._ops:
            return
        ops, self._ops = self._ops, []
        self._urgent, self._due = False, None
        if self.gathers:
            folds = [_Entry(op, then, failed, rows <= _LOOP_ROWS, rows)
                     for op, then, failed, rows in filter(None, (g() for g in self.gathers))]
            ops[:0] = folds
        if self._on_loop(ops):
            return
        self._busy = True
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._thread, self._commit, ops)
        future.add_done_callback(lambda f: self._committed(ops, f))

    def _on_loop(self, ops: list[_Entry]) -> bool:
        """Commit a small batch of quick writes right here; False to leave it to the
        thread (not all quick, too many, loop commits paused, or the database locked)."""
        db = self._quick
        if db is None or not all(entry.quick for entry in ops) \
                or sum(entry.rows for entry in ops) > _LOOP_ROWS:
            return False
        started = time.perf_counter()
        if started < self._quick_after:
            return False
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error:  # another process writes: the thread waits for it, not us
            self._quick_after = started + _LOOP_PAUSE
            return False
        error: BaseException | None = None
        try:
            for entry in ops:
                entry.op(db)
            db.execute("COMMIT")
        except Exception as exc:
            error = exc
            with suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        self._loop_took(started)
        if error is None:
            self.loop_commits += 1
            self._since_checkpoint += 1
            if self._since_checkpoint >= _CHECKPOINT_EVERY:
                self._since_checkpoint = 0
                # With nobody writing meanwhile (the writes wait, the loop does not), so
                # the checkpoint catches up and the next write starts the WAL afresh: a
                # checkpoint running beside a steady stream of loop commits never does,
                # and the WAL (and every read, which searches it) would grow without end.
                self._busy = True
                checkpoint = asyncio.get_running_loop().run_in_executor(
                    self._thread, self._checkpoint)
                checkpoint.add_done_callback(self._checkpointed)
        self._finish(ops, error)
        return True

    def _loop_took(self, started: float) -> None:
        """Pause loop commits when they cost the loop too much: the median of the last
        few over the limit (a median, so a commit preempted by a busy machine does not
        count), or long stalls more than once in a few."""
        took = time.perf_counter() - started
        costs = self._loop_costs
        costs.append(took)
        if took > _LOOP_STALL:
            self._loop_stalls += 1
        slow = self._loop_stalls >= 2
        if len(costs) == _LOOP_SAMPLE:
            slow = slow or sorted(costs)[_LOOP_SAMPLE // 2] > _LOOP_LIMIT
            costs.clear()
            self._loop_stalls = 0
        if slow:
            self._quick_after = started + took + _LOOP_PAUSE
            costs.clear()
            self._loop_stalls = 0

    def _checkpoint(self) -> None:
        """In the writer thread: move the loop's commits from the WAL into the database
        (PASSIVE: it waits for no reader)."""
        try:
            self._writer.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error as exc:
            log.debug("a checkpoint of the delivery database failed: %s", exc)

    def _checkpointed(self, future: asyncio.Future[None]) -> None:
        self._busy = False
        self._next()

    def _commit(self, ops: list[_Entry]) -> BaseException | None:
        """In the writer thread: one transaction for ``ops``."""
        try:
            with transaction(self._writer):
                for entry in ops:
                    entry.op(self._writer)
        except Exception as exc:
            return exc
        return None

    def _committed(self, ops: list[_Entry], future: asyncio.Future[BaseException | None]
                   ) -> None:
        self._busy = False
        if future.cancelled():
            error: BaseException | None = asyncio.CancelledError()
        else:
            error = future.exception() or future.result()
        self._finish(ops, error)

    def _finish(self, ops: list[_Entry], error: BaseException | None) -> None:
        """After a transaction: its callbacks, then the next batch."""
        if error is not None:
            log.error("the delivery database failed; %d writes were rolled back (their "
                      "messages are not acknowledged and will come again): %s: %s",
                      len(ops), type(error).__name__, error)
            for entry in ops:
                if entry.failed is not None:
                    entry.failed()
        else:
            self.commits += 1
            self.writes += len(ops)
            for entry in ops:
                if entry.then is not None:
                    try:
                        entry.then()
                    except Exception:  # one caller's bug must not keep the others waiting
                        log.exception("after a delivery commit")
        self._next()

    def _next(self) -> None:
        """Start the next batch, now, or when its writes are due."""
        if self._busy:  # a callback started the next batch already, or a checkpoint runs
            return
        if self._ops and (self._urgent or self._idle is not None):
            if self._handle is None:
                self._handle = asyncio.get_running_loop().call_soon(self._start)
        elif self._ops:  # only writes that may wait: they wait for company a moment
            self._wait_for_company()
        elif self._idle is not None:
            self._idle.set()

    async def flush(self) -> None:
        """Wait until everything submitted so far is committed (or failed)."""
        while self._busy or self._ops:
            self._idle = asyncio.Event()
            if not self._busy:
                self._start()
            if self._busy or self._ops:
                await self._idle.wait()

    async def close(self) -> None:
        """Commit what is left, then stop the writer thread."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._later is not None:
            self._later.cancel()
            self._later = None
        await self.flush()
        self._closed = True
        self._thread.shutdown(wait=True)
        if self._quick is not None:
            self._quick.close()
        self._writer.close()


def _nothing(db: sqlite3.Connection) -> None:
    """A write that only starts a transaction (the folds ride first in it)."""
