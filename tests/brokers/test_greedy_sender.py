"""A sender that ignores flow control, writing raw records into a node's Redis inbox.

It opens a connection as a dialler would, sends a valid hello, then thousands of
requests to a slow handler without waiting for a single credit. The node must close
the connection once the sender is past its window (with that reason), not hold every
frame: its memory is measured from /proc.
"""

from __future__ import annotations

import json
import secrets
import struct
import time

import pytest

from p2phost._runtime import Hello, Kind, encode
from p2phost_sdk import Identity
from p2phost_sdk.inbox._record import Record, RecordType, data_records
from tests.brokers.conftest import MEDIA, NodeMaker

MB = 1024 * 1024


def rss(pid: int) -> int:
    """The resident memory of process ``pid``, in bytes."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


@pytest.mark.services
def test_a_sender_past_its_window_is_cut_off_not_buffered(make_node: NodeMaker) -> None:
    import redis

    over = MEDIA["redis"]
    over.require()
    bob = make_node("bob", over, ledger={"delay": 30})  # handlers that hold the mailbox
    pid = bob.process.process.pid
    bob.cli("ping", bob.address, "--count", "1", "--interval", "0")  # warmed up
    before = rss(pid)
    me = Identity.generate().peer_id
    connection, epoch = secrets.token_bytes(16), secrets.randbits(32)
    deadline = int((time.time() + 30) * 1000).to_bytes(8, "big")
    body = json.dumps("x" * 20_000).encode()
    frames = [Hello(peer_id=me, codecs=("application/json",), session="raw",
                    nonce="raw").to_frame()]
    frames += [encode(Kind.MESSAGE, 0, b"note", body) for _ in range(4_999)]
    with redis.Redis() as client:
        inbox = f"p2phost:inbox:{bob.peer_id}"
        try:
            client.xadd(f"p2phost:inbox:{me}", {"r": b"-"})  # where the ACCEPT goes
            client.xadd(inbox, {"r": Record(RecordType.OPEN, True, connection, epoch, 0, me,
                                            deadline + struct.pack("!I", 256), "").encode()})
            for start in range(0, len(frames), 250):  # never a look at the credit
                pipe = client.pipeline(transaction=False)
                for record in data_records(True, connection, epoch, start + 1, me, "",
                                           frames[start:start + 250]):
                    pipe.xadd(inbox, {"r": record})
                pipe.execute()
            deadline_s = time.monotonic() + 20
            while "flow-control window" not in bob.process.stderr \
                    and time.monotonic() < deadline_s:
                time.sleep(0.2)
            time.sleep(2)  # what the medium still delivers after the close
            grown = rss(pid) - before
        finally:
            client.delete(f"p2phost:inbox:{me}")
    print(f"5,000 frames of 20 KB past the window: the node grew by {grown / MB:.0f} MB")
    # 5,000 frames held would be over 100 MB; a window of them is about 5 MB.
    assert grown < 40 * MB, f"the node grew by {grown / MB:.0f} MB"
    assert "sent more than its flow-control window (256 frames)" in bob.process.stderr
    code, out, err = bob.cli("ping", bob.address, "--count", "1", "--interval", "0")
    assert code == 0, out + err  # and the node still serves
