"""The app conformance kit, and an in-memory network of N nodes to test apps on.

The ``app_network`` fixture starts real p2phost nodes (the host's runtime, found through the
``p2phost_sdk.node`` entry point that an installed p2phost registers) in this process,
joined by an in-memory transport, each running the apps you give it, all connected to each
other; they are shut down when the test ends::

    async def test_greets(app_network):
        alice, bob = await app_network(2, lambda: [Greeter()])
        assert await alice.request(bob.peer_id, "greet", {"name": "x"}) == "hello, x"

For the kit, subclass :class:`AppConformance` and give it an ``app_factory`` fixture (a
callable making a new app), and, when its handlers need particular bodies, ``samples``::

    class TestGreeter(AppConformance):
        samples = {"greet": [{"name": "x"}]}

        @pytest.fixture
        def app_factory(self):
            return Greeter

The kit checks that the app declares handlers, answers requests (a reply or a clean error,
never a hang), survives hostile bodies, serves several peers at once, and stops promptly.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import pytest

from .._app import App, Message, Messenger, handler
from .._codec import Codec
from .._errors import CodecError, RemoteError
from .._identity import Identity
from ._network import MemoryNetwork

__all__ = [
    "PROBE_TOPIC",
    "AppConformance",
    "AppFactory",
    "AppNetwork",
    "NetworkFactory",
    "app_network",
]

#: Makes a new app (a fresh instance per node).
AppFactory = Callable[[], App]
#: The topic of the kit's own probe app, to check that a node is still alive.
PROBE_TOPIC = "p2phost-kit/probe"
#: Bodies no handler should crash the node on.
HOSTILE_BODIES: tuple[Any, ...] = (None, "", -1, 1e308, "x" * 10_000, [None] * 100,
                                   {"": {"": {"": []}}}, True, {"name": 0})


class _KitCodec(Codec):
    """Plain JSON, so the kit depends on no codec plugin."""

    content_type = "application/json"

    def encode(self, value: Any) -> bytes:
        try:
            return json.dumps(value, allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            raise CodecError(str(exc)) from exc

    def decode(self, data: bytes) -> Any:
        try:
            return json.loads(data)
        except ValueError as exc:
            raise CodecError(str(exc)) from exc


class _Probe(App):
    name = "p2phost-kit-probe"

    @handler(PROBE_TOPIC)
    async def probe(self, message: Message) -> str:
        return "alive"


@dataclass
class AppNetwork:
    """Nodes of one in-memory network; iterate it for the nodes (``a, b = network``)."""

    nodes: list[Messenger] = field(default_factory=list)
    #: The apps each node runs (without the kit's probe), by node.
    apps: list[list[App]] = field(default_factory=list)

    def __iter__(self) -> Iterator[Messenger]:
        return iter(self.nodes)

    def __getitem__(self, index: int) -> Messenger:
        return self.nodes[index]

    def __len__(self) -> int:
        return len(self.nodes)

    async def alive(self, index: int, timeout: float = 5.0) -> bool:
        """Whether node ``index`` still answers (asked by another node of the network)."""
        asker = self.nodes[(index + 1) % len(self.nodes)]
        answer = await asker.request(self.nodes[index].peer_id, PROBE_TOPIC, None,
                                     timeout=timeout)
        return bool(answer == "alive")


NetworkFactory = Callable[..., Awaitable[AppNetwork]]
#: The entry point group where a host registers the node factory the kit runs apps on.
NODE_GROUP = "p2phost_sdk.node"


def node_factory() -> Callable[..., Any]:
    """The installed host's node factory; skips the test when no host is installed.

    The factory takes ``(identity, *, transports, codecs, apps, name, listen,
    drain_timeout)`` and returns a node that is not started yet.
    """
    found = sorted(entry_points(group=NODE_GROUP), key=lambda e: e.name)
    if not found:
        pytest.skip("the app kit runs apps on real p2phost nodes: pip install p2phost")
    factory: Callable[..., Any] = found[0].load()
    return factory


@pytest.fixture
async def app_network() -> AsyncIterator[NetworkFactory]:
    """``await app_network(n, make_apps)``: ``n`` connected nodes, each running ``make_apps()``.

    ``make_apps`` returns one app or a list of apps (new instances for each node).
    """
    make_node = node_factory()  # the host's runtime, not a fake
    nodes: list[Any] = []
    transport = MemoryNetwork()

    async def make(count: int, make_apps: Callable[[], App | Sequence[App]]) -> AppNetwork:
        network, started = AppNetwork(), []
        first = len(nodes)
        for number in range(count):
            made = make_apps()
            apps = [made] if isinstance(made, App) else list(made)
            node = make_node(Identity.generate(), transports={"mem": transport},
                             codecs={"application/json": _KitCodec()}, apps=[*apps, _Probe()],
                             name=f"kit-{first + number}",
                             listen=[f"mem://kit-{first + number}"], drain_timeout=2.0)
            await asyncio.wait_for(node.start(), 10)
            nodes.append(node)
            started.append(node)
            network.nodes.append(node)
            network.apps.append(apps)
        for i, dialler in enumerate(started):
            for other in started[i + 1:]:
                await asyncio.wait_for(dialler.connect(other.addresses[0]), 10)
        return network

    try:
        yield make
    finally:
        await asyncio.gather(*(asyncio.wait_for(n.close(), 15) for n in nodes),
                             return_exceptions=True)


class AppConformance:
    """The app kit. Subclass it and provide an ``app_factory`` fixture."""

    #: Bodies each topic's handler is sent (default for a topic: ``[{}]``).
    samples: dict[str, list[Any]] = {}
    #: Seconds a request may take before the kit calls the handler hung.
    request_timeout: float = 5.0
    #: Nodes in the many-peers test.
    peers: int = 4

    def _topics(self, app_factory: AppFactory) -> list[str]:
        return sorted(app_factory().handlers())

    async def _answer(self, node: Messenger, peer: str, topic: str, body: Any) -> str:
        try:
            await node.request(peer, topic, body, timeout=self.request_timeout)
        except RemoteError:
            return "error"  # a handler may refuse a body: it answers with an error
        return "reply"

    def test_declares_handlers(self, app_factory: AppFactory) -> None:
        """The app handles at least one topic, each with an ``async def`` handler."""
        handlers = app_factory().handlers()
        assert handlers, "the app declares no handler: mark methods with @handler('topic')"
        for topic, func in handlers.items():
            assert isinstance(topic, str) and topic, f"bad topic {topic!r}"
            assert inspect.iscoroutinefunction(func), f"handler of {topic!r} is not async"

    async def test_answers_requests(self, app_factory: AppFactory,
                                    app_network: NetworkFactory) -> None:
        """Every topic answers a request with a reply or an error, never a hang."""
        network = await app_network(2, app_factory)
        alice, bob = network
        for topic in self._topics(app_factory):
            for body in self.samples.get(topic, [{}]):
                await self._answer(alice, bob.peer_id, topic, body)
        assert await network.alive(1)

    async def test_survives_hostile_bodies(self, app_factory: AppFactory,
                                           app_network: NetworkFactory) -> None:
        """Bodies a handler does not expect get an error reply; the node keeps serving."""
        network = await app_network(2, app_factory)
        alice, bob = network
        for topic in self._topics(app_factory):
            for body in HOSTILE_BODIES:
                await self._answer(alice, bob.peer_id, topic, body)
                await alice.send(bob.peer_id, topic, body)
        assert await network.alive(1)

    async def test_serves_many_peers_at_once(self, app_factory: AppFactory,
                                             app_network: NetworkFactory) -> None:
        """Every node asks every other at the same time; all of them are answered."""
        network = await app_network(self.peers, app_factory)
        topics = self._topics(app_factory)
        asks = [self._answer(node, other.peer_id, topic, self.samples.get(topic, [{}])[0])
                for node in network for other in network if other is not node
                for topic in topics for _ in range(3)]
        results = await asyncio.wait_for(asyncio.gather(*asks), self.request_timeout * 3)
        assert len(results) == len(asks)
        for index in range(len(network)):
            assert await network.alive(index)

    async def test_stops_promptly(self, app_factory: AppFactory) -> None:
        """``start`` and ``stop`` of a lone app return promptly and leave no task behind."""
        make_node = node_factory()
        before = asyncio.all_tasks()
        node = make_node(Identity.generate(), transports={"mem": MemoryNetwork()},
                         codecs={"application/json": _KitCodec()}, apps=[app_factory()],
                         name="kit-alone", listen=["mem://alone"], drain_timeout=2.0)
        await asyncio.wait_for(node.start(), 10)
        await asyncio.wait_for(node.close(), 10)
        await asyncio.sleep(0)
        left = {t for t in asyncio.all_tasks() - before if not t.done()}
        assert not left, f"tasks still running after the node stopped: {left}"
