"""The replay guard of sealed frames survives a restart: what a node took is refused when
replayed to its next run, what it read but never finished is taken then."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2phost._runtime.wire._guardfile import GUARD_NAME, read_counts
from p2phost._runtime.wire._sealed import Sealer, SealError
from p2phost_sdk import Identity

ALICE, BOB = Identity.generate(), Identity.generate()


def _frames(count: int) -> list[bytes]:
    alice = Sealer(ALICE, replay_window=60)
    session, recipient, cipher = alice.session_to(BOB.peer_id)
    return [alice.seal(b"frame %d" % n, session, recipient, cipher, n) for n in range(count)]


def test_frames_taken_before_a_restart_are_refused_after_it_and_counted(
        tmp_path: Path) -> None:
    path = tmp_path / GUARD_NAME
    frames = _frames(5)
    bob = Sealer(BOB, replay_window=60, path=path)
    for frame in frames[:3]:
        _, session, counter, sealed_at = bob.open_frame(frame, ALICE.peer_id)
        bob.taken(ALICE.peer_id, session, counter, sealed_at)
    bob.open_frame(frames[3], ALICE.peer_id)  # read, never finished: the medium resends it
    bob.close()

    again = Sealer(BOB, replay_window=60, path=path)
    for frame in frames[:3]:
        with pytest.raises(SealError, match="replayed"):
            again.open(frame, ALICE.peer_id)
    assert again.open(frames[3], ALICE.peer_id) == b"frame 3"
    assert again.open(frames[4], ALICE.peer_id) == b"frame 4"
    assert read_counts(path) == {"replayed": 3}
    again.close()


def test_the_guard_file_stays_bounded_and_forgets_what_left_the_window(
        tmp_path: Path) -> None:
    path = tmp_path / GUARD_NAME
    frames = _frames(3000)
    bob = Sealer(BOB, replay_window=60, path=path)
    assert bob.file is not None
    bob.file.taken.window = 60
    for frame in frames:
        _, session, counter, sealed_at = bob.open_frame(frame, ALICE.peer_id)
        bob.taken(ALICE.peer_id, session, counter, sealed_at)
    bob.close()
    # Compacted at the next start: one line for the session, whatever was taken.
    again = Sealer(BOB, replay_window=60, path=path)
    assert len(path.read_text().splitlines()) == 1
    with pytest.raises(SealError, match="replayed"):
        again.open(frames[-1], ALICE.peer_id)
    again.close()
    # A run whose window no longer covers them forgets them (they are refused as stale).
    later = Sealer(BOB, replay_window=1e-6, path=path)
    assert path.read_text() == ""
    with pytest.raises(SealError, match="replay window"):
        later.open(frames[-1], ALICE.peer_id)
    later.close()
