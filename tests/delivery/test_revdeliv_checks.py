"""Review of delivfix: checks of the delivery.db refusal that held up (these pass)."""

from __future__ import annotations

import shutil
from pathlib import Path

from p2phost._runtime.delivery._check import check_state
from p2phost._runtime.delivery._store import DATABASE_NAME
from tests.delivery.test_damaged_state import unacknowledged
from tests.delivery.test_node import Make, Sender, kind, make

__all__ = ["kind", "make"]


async def test_fresh_restart_copy_and_moved_aside_database_all_start(
        make: Make, tmp_path: Path) -> None:
    state = tmp_path / "a" / ".p2phost"
    node = await make([Sender()], state=state, listen=[])  # fresh
    await node.close()
    await (await make([Sender()], state=state, listen=[])).close()  # restart
    await unacknowledged(make, state)  # sends waiting in the journal
    copy = tmp_path / "b" / ".p2phost"
    shutil.copytree(state, copy)  # the project copied elsewhere
    assert all(ok for ok, _, _ in check_state(copy))
    node = await make([Sender()], state=copy, listen=[])
    assert len(node.delivery.snapshot()["outbox"]) == 1
    await node.close()
    (copy / DATABASE_NAME).rename(copy / "aside.db")  # moved aside: starts, warns
    for suffix in ("-wal", "-shm"):
        if (side := copy / (DATABASE_NAME + suffix)).exists():
            side.rename(copy / ("aside.db" + suffix))
    node = await make([Sender()], state=copy, listen=[])
    # (folded into the database by the last close: what only it held is gone, as warned)
    await node.close()
    await (await make([Sender()], state=copy, listen=[])).close()  # and again
    assert all(ok for ok, _, _ in check_state(copy))


async def test_owed_slots_neither_leak_nor_go_negative_under_cancel_and_errors() -> None:
    """Cancelled while waiting, cancelled just after being handed a slot, a dial that
    raises: dialling returns to 0 and the next waiter always gets its turn."""
    import asyncio

    from p2phost._runtime.node._owed import OwedDials

    room = [1]
    owed = OwedDials(room=lambda: room[0], connected=lambda peer: False, limit=1)
    gate = asyncio.Event()

    async def dial(fail: bool = False) -> None:
        async with owed.slot():
            await gate.wait()
            if fail:
                raise OSError("refused")

    first = asyncio.ensure_future(dial(fail=True))
    waiting = [asyncio.ensure_future(dial()) for _ in range(3)]
    await asyncio.sleep(0)
    assert owed.dialling == 1
    waiting[0].cancel()  # cancelled while waiting for a slot
    gate.set()
    await asyncio.sleep(0)
    # first raised and released: waiting[1] was handed the slot; cancel it before it runs
    waiting[1].cancel()
    results = await asyncio.gather(first, *waiting, return_exceptions=True)
    assert isinstance(results[0], OSError) and results[3] is None
    assert owed.dialling == 0 and not owed._waiters
