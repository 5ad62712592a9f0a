"""The node: it joins the pieces, runs their lifetime (start, graceful close) and offers
the messaging API apps use (:class:`~._messaging.MessagingAPI`). Connections (admission,
handshakes, serving, keepalive) are the :class:`~._connections.Connections`', dialling
the :class:`~._dialler.Dialler`'s, messages the :class:`~._dispatch.Dispatcher`'s,
acknowledged delivery the :class:`~._delivery.Reliable`'s.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from p2phost_sdk import (
    AddressError,
    App,
    Codec,
    Connection,
    Discovery,
    Identity,
    Listener,
    PeerInfo,
    PeerRecord,
    PluginTimeout,
    PresenceSigner,
    Security,
    SignedPresence,
    TaskOwner,
    Transport,
    TransportError,
    close_within,
    plugin_name,
    with_timeout,
)

from ..._address_form import check_form
from ..._observability._links import link_rows
from ..._observability._logs import flush_repeats, json_enabled, limit_repeats, with_context
from ..._observability._tracing import open_tracing
from ..._schemes import manifest_addresses, scheme_of
from .._errors import ListenError, NodeConfigError, bad_address
from ..delivery._delivery import Reliable
from ..delivery._store import DATABASE_NAME
from ..messaging._dispatch import Dispatcher
from ..messaging._peers import PeerTable
from ..messaging._stats import DeliveryStats
from ..wire._channel import Channel
from ..wire._guardfile import GUARD_NAME
from ..wire._handshake import Admit, Hello, announced
from ..wire._sealed import Sealer
from ._connections import Connections
from ._dialler import Link
from ._discovering import DiscoveryRunner
from ._letters import Letters
from ._messaging import MessagingAPI
from ._options import NodeOptions
from ._schemas import hello_schemas

if TYPE_CHECKING:
    import pluggy

    from ..._manifest import Manifest
    from ..._observability._metrics import NodeMetrics

log = logging.getLogger("p2phost.node")

INSECURE_WARNING = "no security plugin: connections are NOT authenticated or encrypted"
_LISTEN_FIX = ("pick another address in [node] listen of p2phost.toml (port 0 picks a free "
               "port), or stop the process that uses it")
# A shared medium (broker, database) is not ours to pick a port on: its URL, or the
# service behind it, is what is wrong.
_MEDIUM_FIX = ("check the URL in [node] listen of p2phost.toml, and that the broker or "
               "database runs there and accepts those credentials")


async def _close_all(bound: float, closes: Iterable[tuple[Awaitable[Any], str, str]]
                     ) -> None:
    """Await every close of ``closes`` (the work, its plugin, what it does) at once, each
    for up to ``bound`` seconds: however many hang, they cost the bound once, and each
    that hangs or fails is named in the log. Every one is awaited before this returns."""
    async def close(work: Awaitable[Any], plugin: str, doing: str) -> None:
        try:
            await close_within(work, bound, plugin=plugin, doing=doing, logger=log)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # close() itself is cancelled
            # (A plugin that cancelled itself: said, and the others still closed.)
            log.warning("%s was cancelled %s", plugin, doing)

    async with asyncio.TaskGroup() as group:
        for work, plugin, doing in closes:
            group.create_task(close(work, plugin, doing))


class Node(MessagingAPI):
    """A running p2phost node; apps see it as their :class:`p2phost_sdk.Messenger`."""

    def __init__(
        self,
        identity: Identity,
        *,
        transports: Mapping[str, Transport],
        codecs: Mapping[str, Codec],
        discovery: Sequence[Discovery] = (),
        security: Sequence[Security] = (),
        apps: Sequence[App] = (),
        options: NodeOptions = NodeOptions(),
        hooks: pluggy.HookRelay | None = None,
        admit: Admit | None = None,
    ) -> None:
        if not codecs:
            raise NodeConfigError("no codec plugin is loaded: a node needs one to encode "
                                  "messages", fix="p2phost plugin install json-codec")
        self.identity = identity
        self.options = options
        self._transports = dict(transports)
        self._codecs = dict(codecs)
        self._discovery = DiscoveryRunner(
            discovery, timeout=min(options.dial_timeout, options.plugin_timeout))
        self._signer = PresenceSigner(identity)
        self._security = security[0] if security else None
        if len(security) > 1:
            log.warning("several security plugins are loaded; using %r",
                        type(self._security).__name__)
        # Secure nodes seal every frame on inbox media (no stream to secure there).
        self._sealer = None if self._security is None else Sealer(
            identity, replay_window=options.replay_window,
            path=options.state_dir / GUARD_NAME if options.state_dir else None)
        self._admit = admit
        self._apps = list(apps)
        self._hooks = hooks
        self._table = PeerTable(identity.peer_id)
        self._tasks = TaskOwner("node", logger=log)
        self._listeners: list[tuple[Transport, Listener]] = []
        self._addresses: list[str] = []
        self._dialler = Link(
            local_peer_id=identity.peer_id, table=self._table, tasks=self._tasks,
            transport_for=self._transport_for, open_outgoing=self._open_outgoing,
            own_addresses=lambda: self._addresses, peer_limit=options.peer_limit,
            dial_timeout=options.dial_timeout, backoff=options.reconnect)
        # Random start: ids stay unique across restarts, for receivers that dedupe.
        ids = itertools.count(secrets.randbits(62) + 1)
        self._stats = DeliveryStats(peer_labels=options.metrics.peer_labels,
                                    topic_labels=options.metrics.topic_labels)
        # Acknowledged delivery (docs/delivery.md): sends on its topics divert to it.
        self._reliable = Reliable(
            self._dialler, ids=ids, apps=self._apps, codecs=self._codecs,
            settings=options.delivery, stats=self._stats,
            max_frame_size=options.max_frame_size,
            path=options.state_dir / DATABASE_NAME if options.state_dir else None)
        self._dispatch = Dispatcher(self._apps, local_peer_id=identity.peer_id,
                                    max_frame_size=options.max_frame_size,
                                    reply_channel=self._dialler.reply_channel, ids=ids,
                                    stats=self._stats, delivery=self._reliable)
        self._acked_topics = self._reliable.topics
        # Metrics (docs/operations.md): handlers timed before acknowledged delivery
        # takes its routes; the endpoint listens from start() on.
        self.metrics: NodeMetrics | None = None
        if options.metrics.listen:
            from ..._observability._metrics import NodeMetrics
            self.metrics = NodeMetrics(options.metrics, self._observed)
            self.metrics.timings.instrument(self._dispatch)
        if json_enabled():  # --log-format json: lines name the message being handled
            with_context(self._dispatch)
        # Traces (the otel extra and OTEL_TRACES_EXPORTER): no import of it otherwise.
        self._tracing = open_tracing(options.name)
        if self._tracing is not None:
            self._tracing.instrument(self._dispatch, self._reliable, self)
        # Stored messages on inbox media (docs/transports.md, "Peers that are not running").
        self._letters = Letters(identity=identity, dispatch=self._dispatch,
                                reliable=self._reliable, link=self._dialler, ids=ids,
                                codecs=self._codecs, transports=self._transports, admit=admit,
                                client=options.client, frame_limit=options.max_frame_size)
        # Admission, handshakes, serving channels, keepalive (_connections.py).
        self._connections = Connections(
            identity=identity, options=options, codecs=self._codecs,
            security=self._security, sealer=self._sealer, admit=admit, table=self._table,
            tasks=self._tasks, reliable=self._reliable, dispatch=self._dispatch,
            dial_waiting=self._dialler.dial_waiting, addresses=self._addresses,
            notify=self._notify)
        self._connections.schemas = hello_schemas(self._dispatch.routes)  # models' (wire.md)
        self._dialler.owed.retire = self._retire_spare
        self._dialler.owed.idle = self._idle
        self._connections.full = self._dialler.owed.refused
        self._started = False
        self._closing = False

    # -- what apps and discovery see -------------------------------------------------

    @property
    def peer_id(self) -> str:
        """This node's peer id."""
        return self.identity.peer_id

    @property
    def delivery(self) -> Reliable:
        """Acknowledged delivery: its counters, dead letters and operator commands."""
        return self._reliable

    @property
    def apps(self) -> tuple[App, ...]:
        """The apps this node runs: the manifest's app plugins and a program's own."""
        return tuple(self._apps)

    @property
    def addresses(self) -> list[str]:
        """The addresses this node really listens on (port 0 resolved)."""
        return list(self._addresses)

    def when_listening(self, callback: Callable[[str], None]) -> None:
        """Call ``callback`` with each address this node listens on once it takes
        connections: at once for most, and for a listener that waits to be granted
        something (``Listener.serving``: a relay's reservation) once it is, however late
        (a relay that was down and comes up)."""
        for _, listener in self._listeners:
            serving = listener.serving
            if serving is None or serving.is_set():
                for address in listener.addresses:
                    callback(address)
            else:
                self._tasks.spawn(self._when_serving(listener, serving, callback),
                                  "listening")

    @staticmethod
    async def _when_serving(listener: Listener, serving: asyncio.Event,
                            callback: Callable[[str], None]) -> None:
        await serving.wait()
        for address in listener.addresses:
            callback(address)

    @property
    def topics(self) -> list[str]:
        """The topics this node's apps handle."""
        return self._dispatch.topics

    def add_handler(self, app: App, topic: str, handler: Any) -> None:
        """Handle ``topic`` with ``handler`` in ``app`` (one of this node's) from now on
        (at-most-once topics only); peers that connect later see it in the hello."""
        if topic in self._reliable.policies:
            raise NodeConfigError(f"topic {topic!r} is acknowledged ([delivery.{topic}] or an "
                                  "app's delivery): its handler must be there at start",
                                  fix="register the handler before the node opens")
        self._dispatch.add_route(app, topic, handler)
        schemas = self._connections.schemas
        self._connections.schemas = hello_schemas(self._dispatch.routes)
        try:
            self._connections.check_hello()
        except NodeConfigError:  # as it was: peers still take its hello
            del self._dispatch.routes[topic]
            self._connections.schemas = schemas
            raise
        if self.metrics is not None:  # timed as the routes of start are
            self.metrics.timings.instrument_topic(self._dispatch, topic)

    def hello_of(self, peer_id: str) -> Hello | None:
        """What the connected peer ``peer_id`` said about itself (None: not connected)."""
        channel = self._dialler.usable(peer_id)
        return None if channel is None else channel.hello

    def peers(self) -> list[PeerInfo]:
        """The peers connected now."""
        infos = []
        for peer in self._table.peers.values():
            channel = peer.any_open()
            if channel is not None:
                infos.append(channel.info)
        return infos

    def check_address(self, address: str, where: str | None = None) -> None:
        """NodeConfigError (a usage error) when the transport of ``address`` finds it
        malformed. An address no transport serves passes: dialling it says so, and
        ``p2phost doctor`` names the plugin to install."""
        check_address(self._transports, address, where)

    def peer_found(self, record: PeerRecord) -> None:
        """Discovery found a peer: keep a connection to it (while [node] peer-limit allows)."""
        self._dialler.peer_found(record)

    def peer_lost(self, record: PeerRecord) -> None:
        """Discovery lost a peer: stop redialling it (an open connection stays)."""
        self._dialler.peer_lost(record)

    def sign_presence(self, scope: str, addresses: Sequence[str], *, lifetime: float,
                      goodbye: bool = False) -> SignedPresence:
        """This node's presence record, signed (for discovery plugins to announce): of
        ``addresses``, what peers take (:func:`announced`; the node's start warns of its
        own listen addresses left out)."""
        return self._signer.sign(scope, announced(addresses), lifetime=lifetime,
                                 goodbye=goodbye)

    def discovery_status(self) -> dict[str, Any]:
        """Each discovery plugin (up or down, why, its counters) and the dial counters."""
        return {"plugins": self._discovery.status(),
                "dialling": self._dialler.targets.snapshot()}

    def stats(self) -> dict[str, Any]:
        """Counters of every mode, mailboxes and connections, as JSON data."""
        answer = self._reliable.snapshot()
        answer["mailboxes"] = self._dispatch.mailboxes()
        answer["connections"] = self._connections.snapshot()
        answer["links"] = link_rows(c for p in self._table.peers.values() for c in p.channels)
        answer["handshake_failures"] = self._connections.failure_reasons()
        return answer

    async def _observed(self) -> dict[str, Any]:
        assert self.metrics is not None
        return {**self.stats(), "discovery": self.discovery_status(),
                "inboxes": await self.metrics.inboxes.waiting(self._listeners)}

    def _idle(self, peer_id: str) -> bool:
        """Whether nothing uses the connection to ``peer_id`` now: no message owed to it
        (in the outbox or on its way in), no request to it or message of its being
        handled, no dial target but the outbox's keeps it (node/_owed.py)."""
        # (The outbox's look reads the database: last.)
        return not (self._dispatch.busy_with(peer_id) or self._dialler.keeps(peer_id)
                    or self._reliable.owes(peer_id))

    def _retire_spare(self, channel: Channel, why: str) -> None:
        """Close ``channel``, the outbox's idle connection: ``why`` (peers owed messages,
        or a peer dialling in, wait for its room under the peer limit: node/_owed.py)."""
        reason = f"nothing more to send, and {why} under this node's peer-limit"
        # The goodbye now, in the step that found it idle: no message or request can
        # go on it after that look.
        channel.goodbye(reason)
        self._connections.retire(channel, reason)

    # -- lifetime --------------------------------------------------------------------

    async def __aenter__(self) -> Node:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Start apps, listen, start discovery, dial ``options.connect``."""
        if self._started:
            return
        self._started = True
        limit_repeats()  # a library's node: its repeated warnings are counted, not flooded
        if self._tracing is not None:  # the tasks the node creates from here copy it
            self._tracing.attach()
        bound = self.options.plugin_timeout
        try:
            for where, addresses in (("[node] listen", self.options.listen),
                                     ("[node] connect", self.options.connect)):
                for address in addresses:
                    self.check_address(address, where)
            self._reliable.start(self._dispatch.routes)
            self._letters.attach()
            for app in self._apps:
                await with_timeout(app.start(self), bound, plugin=plugin_name(app),
                                   doing="starting its app")
            for address in self.options.listen:
                await self._listen(address)
            self._connections.check_hello()  # (its addresses and every app's topics in it)
            self._connections.check_addresses()
            if self.metrics is not None:
                await self.metrics.start()
            if self._security is None:
                log.warning(INSECURE_WARNING)
                if self._admit is not None:
                    log.warning("the trust policy sees peer ids that no security plugin "
                                "proves: install one (p2phost plugin install noise-security)")
            self._tasks.spawn(self._connections.keepalive(), "keepalive")
            await self._discovery.start(self)
            for address in self.options.connect:
                self._dialler.keep_connected(address)
        except BaseException:
            await self.close()
            raise
        self._notify("p2phost_node_started", peer_id=self.peer_id, addresses=self.addresses)

    async def _listen(self, address: str) -> None:
        transport = self._transport_for(address)
        fix = _MEDIUM_FIX if transport.inbox_based else _LISTEN_FIX
        try:
            listener = await with_timeout(
                transport.listen(address, functools.partial(self._connections.accept, transport)),
                self.options.plugin_timeout, plugin=plugin_name(transport),
                doing=f"listening on {address}")
        except PluginTimeout as exc:
            raise ListenError(str(exc), fix=fix) from exc
        except AddressError as exc:  # a transport without check_address finds out here
            raise bad_address(exc, "[node] listen") from exc
        except TransportError as exc:
            raise ListenError(str(exc), fix=fix) from exc
        self._listeners.append((transport, listener))
        self._addresses.extend(listener.addresses)

    async def close(self) -> None:
        """Graceful shutdown: stop dialling and listening, say goodbye to every peer,
        wait for the replies to this node's requests, drain every mailbox (replies still
        go out), then close everything.

        The drain (acknowledgements, the peers' goodbyes, this node's requests, the
        mailboxes) has one deadline, ``drain_timeout`` in all; then every connection at
        once gets 1 s to hand its last replies to the transport and the transport's close
        (tcp: 2 s of grace for what it buffered). So however many peers do not read,
        close takes about drain_timeout + 3 s. Every wait on a plugin is bounded; one
        that hangs is named in the log."""
        if self._closing:
            return
        self._closing = True
        self._connections.closing = True
        self._notify("p2phost_node_stopping", peer_id=self.peer_id)
        timeout, bound = self.options.drain_timeout, self.options.plugin_timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout

        def left() -> float:
            return max(0.0, deadline - loop.time())

        await self._reliable.drain(timeout)
        self._dialler.stop()
        await self._discovery.stop()
        await _close_all(bound, ((listener.close(), plugin_name(transport),
                                  "closing its listener")
                                 for transport, listener in self._listeners))
        channels = self._connections.channels()
        for channel in channels:
            channel.goodbye("the node is shutting down")
        await self._peers_done(channels, left())
        # This node's own requests on those channels: their replies may follow the goodbye.
        await self._dispatch.answered({channel.peer_id for channel in channels}, left())
        await self._dispatch.drain(left(), drain_timeout=timeout)
        await self._reliable.close()
        # All at once: a peer that does not read costs its grace once, not once per peer.
        await asyncio.gather(*(channel.flush(1.0) for channel in channels))
        await _close_all(bound, ((channel.close("the node shut down"),
                                  plugin_name(channel.connection),
                                  f"closing the connection to {channel.peer_id}")
                                 for channel in channels))
        await _close_all(bound, ((app.stop(), plugin_name(app), "stopping its app")
                                 for app in self._apps))
        await self._tasks.close(bound)
        await self._letters.close(bound)
        await _close_all(bound, ((transport.close(), plugin_name(transport), "closing")
                                 for transport in set(self._transports.values())))
        if self._sealer is not None:
            self._sealer.close()
        self._dispatch.fail_pending(None, "the node shut down")
        self._connections.flush_logs()
        self._dispatch.flush_logs()
        flush_repeats()
        if self.metrics is not None:
            await self.metrics.close()
        if self._tracing is not None:
            await self._tracing.close()

    @staticmethod
    async def _peers_done(channels: list[Channel], timeout: float) -> None:
        # After the peers' goodbyes no new message can arrive; a peer that never answers
        # costs the timeout, nothing more.
        try:
            async with asyncio.timeout(timeout):
                for channel in channels:
                    await channel.peer_done.wait()
        except TimeoutError:
            log.debug("not every peer said goodbye within %gs", timeout)

    def _notify(self, hook: str, **kwargs: Any) -> None:
        if self._hooks is None:
            return
        try:
            getattr(self._hooks, hook)(**kwargs)
        except Exception:
            log.exception("a plugin's %s hook failed", hook)

    # -- connections (_connections.py) -------------------------------------------------

    async def _open_outgoing(self, connection: Connection, address: str, inbox: bool,
                             expected_peer_id: str | None) -> Channel:
        return await self._connections.open(connection, initiator=True, address=address,
                                            inbox=inbox, expected_peer_id=expected_peer_id)

    def _transport_for(self, address: str) -> Transport:
        scheme = scheme_of(address)
        transport = self._transports.get(scheme)
        if transport is None:
            have = ", ".join(f"{s}://" for s in sorted(self._transports)) or "none"
            # The node knows no plugin metadata (and asks no registry): name the search
            # that finds the plugin for this scheme, never a fixed one (``relay+tcp``:
            # the relay plugin).
            if not scheme:  # tcp:/x, h:1: malformed, whichever transport it meant
                check_address(self._transports, address)
            fix = f"p2phost plugin search {scheme.split('+')[0]} --kind transport"
            raise NodeConfigError(
                f"no transport plugin serves {address!r} (loaded transports: {have})", fix=fix)
        return transport


def check_address(transports: Mapping[str, Transport], address: str,
                  where: str | None = None) -> None:
    """NodeConfigError (a usage error) when ``address`` is malformed: no ``scheme://``,
    or its transport among ``transports`` refuses it; ``where`` names the p2phost.toml
    key it is in (None: an address to dial, given to a command or call). The one check of
    an address's form: a start's, a dial's and ``p2phost run --check``'s say the same."""
    scheme = scheme_of(address)
    try:
        # 'tcp://h:1 ' is not a bad port, nor 'tcp:/h:1' an unserved scheme: say what it is
        if not scheme or any(c.isspace() for c in address):
            check_form(address, peer=where != "[node] listen")
        transport = transports.get(scheme)
        if transport is not None:
            transport.check_address(address)
    except AddressError as exc:
        raise bad_address(exc, where) from exc


def check_manifest_addresses(transports: Mapping[str, Transport], manifest: Manifest) -> None:
    """:func:`check_address` for every address ``p2phost.toml`` lists (before a start,
    and by ``p2phost run --check``)."""
    for where, address in manifest_addresses(manifest):
        check_address(transports, address, where)
