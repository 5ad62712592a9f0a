"""A hostile pair floods a circuit whose far end never reads: the relay closes that circuit
(counted), its memory stays bounded, and another circuit through it keeps answering."""

from __future__ import annotations

import asyncio
import base64
import ctypes
import time
from pathlib import Path
from typing import Any

import pytest

from p2phost_sdk import App, Message, PeerUnavailable, handler
from p2phost_sdk.testing.discovery import wait_until
from tests.relay.network import relay_network

#: Well under the old stall (up to forward-timeout, 10 s here, per circuit; 12 s measured)
#: and the keepalive (15 s), with room for a busy machine (0.4 s measured at worst).
ROUND_TRIP_BOUND = 5.0
FRAMES, FLOOD_SECONDS = 20_000, 4.0


def rss() -> int:
    """This process's resident memory, after handing freed heap back to the system (so
    what is measured is what is held, not what the allocator keeps for later)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


async def reserved(service: Any) -> None:
    await wait_until(lambda: any(r.relay_peer for r in service.reservations), 10,
                     "the reservation on the relay")


async def test_a_circuit_whose_far_end_never_reads_does_not_hold_up_the_others() -> None:
    async with relay_network(capacity=16) as make:
        # A circuit's buffer on the relay: buffer-bytes and one frame (under 64 KiB here).
        relay, hop = await make({"serve": True, "forward-timeout": 10.0,
                                 "buffer-bytes": 256 * 1024}, max_frame_size=64 * 1024)
        relay_at = "relay+" + relay.addresses[0]
        # The sink reads nothing once its circuit is open (a small mailbox, then its
        # connection to the relay stops being read); the flooder pushes into that circuit.
        sink, sink_relay = await make({"upgrade": False}, listen=(relay_at,), mem=False,
                                      mailbox_size=16)
        honest, honest_relay = await make({"upgrade": False}, listen=(relay_at,), mem=False)
        await reserved(sink_relay)
        await reserved(honest_relay)
        flooder, flooder_relay = await make()
        caller, _ = await make()
        assert await flooder.connect(f"{relay_at}/p2p-circuit/{sink.peer_id}") == sink.peer_id
        assert await caller.connect(f"{relay_at}/p2p-circuit/{honest.peer_id}") \
            == honest.peer_id
        [(_, circuit_id)] = list(flooder_relay.circuits)

        never = asyncio.Event()

        async def read_nothing(sender: str, body: dict[str, Any]) -> None:
            await never.wait()  # released when the test ends
        sink_relay.on_data = read_nothing  # type: ignore[method-assign]

        before = rss()
        samples: list[int] = []
        times: list[float] = []

        async def flood() -> int:
            frame = base64.b64encode(b"\0" * 2048).decode()
            deadline, sent = time.monotonic() + FLOOD_SECONDS, 0
            while sent < FRAMES and time.monotonic() < deadline:
                await flooder.send(relay.peer_id, "relay",
                                   {"op": "data", "circuit": circuit_id, "data": frame})
                sent += 1
                if sent % 2000 == 0:
                    samples.append(rss() - before)
            return sent

        async def round_trips() -> None:
            deadline = time.monotonic() + FLOOD_SECONDS + 1
            while time.monotonic() < deadline:
                started = time.monotonic()
                reply = await caller.request(honest.peer_id, "echo", {"n": len(times)},
                                             timeout=15)
                assert reply == {"n": len(times)}
                times.append(time.monotonic() - started)
                await asyncio.sleep(0.05)

        sent, _ = await asyncio.gather(flood(), round_trips())
        await wait_until(lambda: hop.hop.counters["closed: not read"]
                         + hop.hop.counters["closed: forward failed"] == 1, 10,
                         "the flooded circuit closed")
        never.set()
        print(f"sent {sent} frames; RSS growth (MiB) {[s >> 20 for s in samples]}; "
              f"round trips {len(times)}, slowest {max(times):.3f}s")
        assert hop.hop.counters["closed: not read"] == 1, dict(hop.hop.counters)
        assert len(times) >= 5 and max(times) < ROUND_TRIP_BOUND, (len(times), max(times))
        assert sent > 1_000  # the flood was real: more than the circuit's buffer holds
        # Bounded: the relay holds its mailbox and one circuit's buffer, whatever the flood
        # (every node of the test is in this process: the figure is for all of them).
        assert max(samples) < 48 * 1024 * 1024, samples
        if len(samples) >= 8:  # flat once the relay's mailbox is full
            assert samples[-1] < samples[len(samples) // 2] + 8 * 1024 * 1024, samples
        assert hop.hop.active_circuits() == 1  # the honest circuit stays
        assert await caller.request(honest.peer_id, "echo", {"end": 1}, timeout=5) == {"end": 1}


class SlowReader(App):
    """Takes its messages slowly: its mailbox fills and its node stops reading."""

    name = "slow-reader"
    mailbox_size = 8

    def __init__(self) -> None:
        self.got = 0

    @handler("slow")
    async def slow(self, message: Message) -> None:
        self.got += 1
        if self.got % 50 == 0:
            await asyncio.sleep(0.05)


async def test_a_sender_faster_than_its_reader_is_slowed_and_keeps_its_circuit() -> None:
    async with relay_network(capacity=16) as make:
        # Buffers far smaller than what is sent: the relay's, and each circuit end's.
        # (Frames of up to 64 KiB, as Noise writes them, fit its max-frame-size.)
        relay, hop = await make({"serve": True, "buffer-bytes": 64 * 1024},
                                max_frame_size=256 * 1024)
        relay_at = "relay+" + relay.addresses[0]
        reader = SlowReader()
        sink, sink_relay = await make({"upgrade": False, "buffer-bytes": 128 * 1024},
                                      listen=(relay_at,), mem=False, apps=(reader,),
                                      mailbox_size=16)
        await reserved(sink_relay)
        sender, sender_relay = await make({"buffer-bytes": 128 * 1024})
        assert await sender.connect(f"{relay_at}/p2p-circuit/{sink.peer_id}") == sink.peer_id
        body = {"pad": "x" * 2048}
        count = 3000  # about 6 MiB: 100 times the relay's buffer
        started = time.monotonic()
        for _ in range(count):
            await sender.send(sink.peer_id, "slow", body)  # waits while the window is full
        # Without flow control the circuit was lost ("closed: not read", or its reader's
        # end gave up), and with it the rest of the messages.
        await wait_until(lambda: reader.got == count or not hop.hop.active_circuits(), 60,
                         "every message read")
        print(f"{count} messages in {time.monotonic() - started:.2f}s; relay counters "
              f"{dict(hop.hop.counters)}")
        assert hop.hop.counters["closed: not read"] == 0
        assert hop.hop.active_circuits() == 1
        assert sender_relay.counters["credit waits"] > 0  # the sender was slowed
        assert await sender.request(sink.peer_id, "echo", {"end": 1}, timeout=5) == {"end": 1}


async def test_a_far_end_that_stops_granting_but_keeps_talking_loses_its_circuit() -> None:
    async with relay_network(capacity=16) as make:
        relay, _ = await make({"serve": True, "buffer-bytes": 64 * 1024},
                              max_frame_size=256 * 1024)
        relay_at = "relay+" + relay.addresses[0]
        sink, sink_relay = await make({"upgrade": False, "buffer-bytes": 64 * 1024},
                                      listen=(relay_at,), mem=False,
                                      keepalive_timeout=600.0, keepalive_interval=0.5)
        await reserved(sink_relay)
        sender, _ = await make({"buffer-bytes": 64 * 1024}, keepalive_timeout=3.0,
                               keepalive_interval=1.0)
        assert await sender.connect(f"{relay_at}/p2p-circuit/{sink.peer_id}") == sink.peer_id
        for circuit in sink_relay.circuits.values():
            # It reads, and pings often (so the sender's keepalive always hears it), but
            # never grants a window again, and never gives up on a silent peer itself.
            circuit._grant = lambda limit: None
        started, outcome = time.monotonic(), "sent everything"
        try:
            async with asyncio.timeout(30):
                for _ in range(2000):
                    await sender.send(sink.peer_id, "echo", {"pad": "x" * 4096})
        except PeerUnavailable:
            outcome = "gave up on the peer"
        except TimeoutError:
            outcome = "still waiting after 30 s"
        assert outcome == "gave up on the peer", outcome
        assert time.monotonic() - started < 20


async def test_without_flow_control_at_the_dialler_a_circuit_works_as_before() -> None:
    async with relay_network() as make:
        relay, hop = await make({"serve": True})
        relay_at = "relay+" + relay.addresses[0]
        target, target_relay = await make({"upgrade": False}, listen=(relay_at,), mem=False)
        await reserved(target_relay)
        serving = hop.on_connect

        async def as_before(sender: str, body: dict[str, Any]) -> dict[str, Any]:
            body.pop("credit", None)  # a dialler from before flow control asks without it
            return await serving(sender, body)
        hop.on_connect = as_before  # type: ignore[method-assign]
        dialler, dialler_relay = await make()
        assert await dialler.connect(f"{relay_at}/p2p-circuit/{target.peer_id}") \
            == target.peer_id
        for n in range(50):
            assert await dialler.request(target.peer_id, "echo", {"n": n}, timeout=5) \
                == {"n": n}
        [circuit] = target_relay.circuits.values()
        assert circuit._window is None and circuit._send_limit is None  # nobody granted
        for service in (hop, target_relay, dialler_relay):
            assert "malformed credit" not in service.counters


async def test_a_frame_too_large_for_the_relay_closes_its_circuit_with_the_reason() -> None:
    async with relay_network() as make:
        # Noise writes messages of up to 64 KiB: more than this relay carries in one frame.
        relay, hop = await make({"serve": True}, max_frame_size=32 * 1024)
        relay_at = "relay+" + relay.addresses[0]
        target, target_relay = await make({"upgrade": False}, listen=(relay_at,), mem=False)
        await reserved(target_relay)
        dialler, _ = await make()
        assert await dialler.connect(f"{relay_at}/p2p-circuit/{target.peer_id}") \
            == target.peer_id
        # The relay announced its max-frame-size: the dialler's frame never leaves, and
        # its circuit closes at both ends with the reason.
        with pytest.raises(PeerUnavailable, match="too large for the relay"):
            await dialler.request(target.peer_id, "echo", {"pad": "x" * 100_000}, timeout=5)
        await wait_until(lambda: hop.hop.counters["closed: closed by an end"] == 1, 10,
                         "the circuit closed for its frame")
        await wait_until(lambda: target.peer_id not in {p.peer_id for p in dialler.peers()},
                         10, "the dialler told")


async def test_a_target_slow_to_accept_holds_up_nothing_but_its_own_circuit() -> None:
    async with relay_network() as make:
        relay, hop = await make({"serve": True, "request-timeout": 6.0})
        relay_at = "relay+" + relay.addresses[0]
        slow, slow_relay = await make(listen=(relay_at,), mem=False)
        honest, honest_relay = await make({"upgrade": False}, listen=(relay_at,), mem=False)
        await reserved(slow_relay)
        await reserved(honest_relay)
        never = asyncio.Event()

        async def never_answer(sender: str, body: dict[str, Any]) -> dict[str, Any]:
            await never.wait()
            return {}
        slow_relay.on_incoming = never_answer  # type: ignore[method-assign]

        dialler, _ = await make({"upgrade": False})
        stuck = asyncio.ensure_future(
            dialler.connect(f"{relay_at}/p2p-circuit/{slow.peer_id}"))
        await asyncio.sleep(0.2)  # the relay is waiting for the slow target's answer
        # The same dialler's next circuit is not queued behind that wait (it used to be,
        # for up to request-timeout, and with it the relay's mailbox for everyone).
        started = time.monotonic()
        assert await dialler.connect(f"{relay_at}/p2p-circuit/{honest.peer_id}") \
            == honest.peer_id
        assert await dialler.request(honest.peer_id, "echo", {"x": 1}, timeout=5) == {"x": 1}
        assert time.monotonic() - started < 4.5  # below request-timeout and the handshake's 5 s
        # The stuck circuit fails: the host's handshake timeout (5 s) or the relay's refusal
        # once the target has not answered within request-timeout, whichever comes first.
        with pytest.raises(Exception, match=r"refused by the target|did not finish"):
            await asyncio.wait_for(stuck, 20)
        # Gone from the relay (closed by the dialler, or refused: counted either way).
        await wait_until(lambda: hop.hop.active_circuits() == 1, 10, "the stuck circuit gone")
        assert hop.hop.counters["closed: closed by an end"] \
            + hop.hop.counters["refused: by the target"] == 1
        never.set()
