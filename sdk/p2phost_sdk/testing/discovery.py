"""The discovery conformance kit: announce, find and lose peers within stated bounds.

Subclass :class:`DiscoveryConformance` in a test module and give it a ``discovery_factory``
fixture: a callable making a new :class:`~p2phost_sdk.Discovery` each call, every one of
them able to see the others (the same medium and scope)::

    import pytest
    from p2phost_sdk.testing.discovery import DiscoveryConformance

    class TestMyDiscovery(DiscoveryConformance):
        found_within = 5.0    # seconds for two instances to find each other
        lost_within = 5.0     # seconds for a stopped instance to be reported lost

        @pytest.fixture
        def discovery_factory(self):
            return lambda: MyDiscovery(scope="kit", interval=0.2, expiry=1.0)

The kit checks that two instances find each other (with the addresses each announces), a
stopped one is reported lost, a peer that comes back is found again, an instance never
reports itself, and ``stop()`` is prompt and leaves no task behind.

*Directed* discovery finds only the peers it is told of or asks for (a static list, a DHT
reached through bootstrap nodes): two instances told nothing find nothing, by design. Such
a plugin sets ``directed = True`` on its test class (``p2phost plugin check``:
``directed = true`` under ``[tool.p2phost.check]``); the kit then skips the two finding
tests, saying so, and checks the rest without waiting for a find. Its own tests must show
that it finds what it is told to.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from .._discovery import Discovery, PeerRecord
from .._identity import Identity
from .._signed import PresenceSigner, SignedPresence

__all__ = ["DiscoveryConformance", "DiscoveryFactory", "RecordingEvents", "wait_until"]

#: What a plugin's tests give the kit: a new Discovery per call.
DiscoveryFactory = Callable[[], Discovery]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class RecordingEvents:
    """A :class:`~p2phost_sdk.DiscoveryEvents` that records what a plugin reports."""

    identity: Identity = field(default_factory=Identity.generate)
    listen: list[str] = field(default_factory=lambda: [f"tcp://127.0.0.1:{_free_port()}"])
    #: Peers currently found, by peer id (the last record reported).
    found: dict[str, PeerRecord] = field(default_factory=dict)
    #: Every peer id reported lost, in order.
    lost: list[str] = field(default_factory=list)
    #: Contract violations seen (reported after stop, reported ourselves...).
    violations: list[str] = field(default_factory=list)
    stopped: bool = False
    _signer: PresenceSigner | None = None

    @property
    def peer_id(self) -> str:
        """This node's peer id."""
        return self.identity.peer_id

    @property
    def addresses(self) -> list[str]:
        """The addresses this node announces."""
        return list(self.listen)

    def sign_presence(self, scope: str, addresses: Sequence[str], *, lifetime: float,
                      goodbye: bool = False) -> SignedPresence:
        """This node's presence record, signed with :attr:`identity`."""
        if self._signer is None:
            self._signer = PresenceSigner(self.identity)
        return self._signer.sign(scope, addresses, lifetime=lifetime, goodbye=goodbye)

    def _check(self, what: str, record: PeerRecord) -> None:
        if self.stopped:
            self.violations.append(f"{what}({record.peer_id}) after stop() returned")
        if record.peer_id == self.peer_id:
            self.violations.append(f"{what} reported this node itself")

    def peer_found(self, record: PeerRecord) -> None:
        """Record a found peer."""
        self._check("peer_found", record)
        if record.peer_id is not None:
            self.found[record.peer_id] = record

    def peer_lost(self, record: PeerRecord) -> None:
        """Record a lost peer."""
        self._check("peer_lost", record)
        if record.peer_id is not None:
            self.found.pop(record.peer_id, None)
            self.lost.append(record.peer_id)


async def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``condition`` until true; the seconds it took. Fails the test after ``timeout``."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            pytest.fail(f"{what}: not within {timeout:.1f} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


class DiscoveryConformance:
    """The discovery kit. Subclass it and provide a ``discovery_factory`` fixture."""

    #: Seconds two started instances may take to find each other.
    found_within: float = 10.0
    #: Seconds a peer may take to report a stopped instance lost.
    lost_within: float = 10.0
    #: Seconds ``stop()`` may take.
    stop_within: float = 3.0
    #: Directed discovery (finds only the peers it is told of): see the module's docs.
    directed: bool = False

    def _directed(self, factory: DiscoveryFactory) -> bool:
        if self.directed or getattr(factory, "directed", False):
            return True
        return False

    def _skip_directed(self, factory: DiscoveryFactory) -> None:
        if self._directed(factory):
            pytest.skip("directed discovery finds only the peers it is told of (a static "
                        "list, a DHT through bootstrap nodes): two instances told nothing "
                        "find nothing; the plugin's own tests show its finding")

    @asynccontextmanager
    async def running(self, discovery: Discovery,
                      events: RecordingEvents) -> AsyncIterator[RecordingEvents]:
        """``discovery`` started with ``events``, stopped on exit (promptly, or the test fails)."""
        await asyncio.wait_for(discovery.start(events), self.stop_within)
        try:
            yield events
        finally:
            await asyncio.wait_for(discovery.stop(), self.stop_within)
            events.stopped = True

    async def test_two_instances_find_each_other(
        self, discovery_factory: DiscoveryFactory
    ) -> None:
        """Each instance reports the other, with the addresses the other announces."""
        self._skip_directed(discovery_factory)
        a_events, b_events = RecordingEvents(), RecordingEvents()
        async with self.running(discovery_factory(), a_events), \
                self.running(discovery_factory(), b_events):
            await wait_until(lambda: b_events.peer_id in a_events.found
                             and a_events.peer_id in b_events.found,
                             self.found_within, "two instances finding each other")
            record = a_events.found[b_events.peer_id]
            assert set(b_events.listen) <= set(record.addresses), record
            assert record.source, "PeerRecord.source should name the discovery plugin"
        assert not a_events.violations + b_events.violations

    async def test_stopped_instance_is_lost_and_found_again(
        self, discovery_factory: DiscoveryFactory
    ) -> None:
        """A stopped peer is reported lost; started again, it is found again."""
        self._skip_directed(discovery_factory)
        a_events, b_events = RecordingEvents(), RecordingEvents()
        async with self.running(discovery_factory(), a_events):
            async with self.running(discovery_factory(), b_events):
                await wait_until(lambda: b_events.peer_id in a_events.found,
                                 self.found_within, "finding the peer")
            await wait_until(lambda: b_events.peer_id in a_events.lost,
                             self.lost_within, "reporting a stopped peer lost")
            again = RecordingEvents(identity=b_events.identity)
            async with self.running(discovery_factory(), again):
                await wait_until(lambda: b_events.peer_id in a_events.found,
                                 self.found_within, "finding a peer that came back")
        assert not a_events.violations + b_events.violations + again.violations

    async def test_never_reports_itself(self, discovery_factory: DiscoveryFactory) -> None:
        """An instance alone hears its own announcements and ignores them."""
        events = RecordingEvents()
        async with self.running(discovery_factory(), events):
            await asyncio.sleep(min(1.0, self.found_within))
        assert events.peer_id not in events.found
        assert not events.violations

    async def test_stop_is_prompt_and_leaves_no_task(
        self, discovery_factory: DiscoveryFactory
    ) -> None:
        """``stop()`` returns within ``stop_within`` and every task it started is done."""
        before = asyncio.all_tasks()
        a_events, b_events = RecordingEvents(), RecordingEvents()
        async with self.running(discovery_factory(), a_events), \
                self.running(discovery_factory(), b_events):
            if self._directed(discovery_factory):
                await asyncio.sleep(min(0.5, self.found_within))  # running, told nothing
            else:
                await wait_until(lambda: b_events.peer_id in a_events.found,
                                 self.found_within, "finding the peer")
        await asyncio.sleep(0)  # let callbacks scheduled by the last cancellations run
        left = {t for t in asyncio.all_tasks() - before if not t.done()}
        assert not left, f"tasks still running after stop(): {left}"
        await asyncio.sleep(0.3)
        assert not a_events.violations + b_events.violations
