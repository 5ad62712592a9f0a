"""The DHT node, with no p2phost node under it: requests go through an :class:`Rpc`.

The plugin gives it an Rpc over the node's own connections; tests give it an in-memory
one, so hundreds of DHT nodes run in one process in seconds. Every wait is bounded:
each request by ``request_timeout``, each lookup by ``lookup_timeout``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from p2phost_sdk import AnnouncementError, SignedPresence

from ._keys import KEY_BITS, key_hex, parse_key, peer_key, topic_key
from ._limits import RateLimit
from ._lookup import DialBudget, LookupResult, Offer, lookup
from ._records import (
    MAX_RECORD_LENGTH,
    PEER_ID_LENGTH,
    PEER_SCOPE,
    WIRE_VERSION,
    ProviderStore,
    RecordGate,
    decode,
    encode,
    provider_scope,
)
from ._routing import RoutingTable, TableLimits

log = logging.getLogger("p2phost.plugin.dht-discovery")

#: Most buckets a join refreshes (see DhtSettings.join_refresh): 2^32 nodes' worth.
JOIN_BUCKETS = 32

#: Signs this node's record: (scope, addresses, lifetime seconds) -> record.
Signer = Callable[[str, Sequence[str], float], SignedPresence]


class Rpc(Protocol):
    """Sends one DHT request to a peer and returns its reply (raises when it fails)."""

    async def call(self, peer_id: str, addresses: Sequence[str],
                   request: dict[str, Any]) -> dict[str, Any]:
        """Ask ``peer_id`` (dialling one of ``addresses`` if need be)."""
        ...


class DhtError(Exception):
    """A request this node refuses (malformed, rate limited); the error reply's text."""


@dataclass
class DhtSettings:
    """Kademlia's parameters and this node's bounds (``[config.dht-discovery]``)."""

    k: int = 20
    alpha: int = 3
    request_timeout: float = 5.0
    lookup_timeout: float = 30.0
    #: Seconds a bucket may go without a lookup before refresh looks it up.
    refresh_interval: float = 600.0
    #: Seconds this node's signed records stay valid (re-signed at half-life).
    record_lifetime: float = 3600.0
    #: Joining looks up a random key in every bucket farther than the closest contact's
    #: (Kademlia's join): the table then holds contacts at every distance, and they know
    #: this node, so later lookups take fewer rounds and more are answered from the table.
    join_refresh: bool = True
    #: Most distinct peers one join asks (dials), bootstrap contacts included; 0: alpha x
    #: k (a lookup asks about k; a join's lookups, one after the other and alpha requests
    #: at a time, may reach alpha times as many, and no more however large the network).
    join_peers: int = 0
    #: Seconds one refresh may take in all: its pings and every bucket's lookup.
    refresh_timeout: float = 60.0
    requests_per_second: float = 50.0
    request_burst: float = 200.0
    limits: TableLimits = field(default_factory=TableLimits)


class Dht:
    """One Kademlia node: answers requests, looks up peers and topic providers."""

    def __init__(self, peer_id: str, sign: Signer, rpc: Rpc,
                 settings: DhtSettings | None = None, addresses: Sequence[str] = (),
                 clock: Callable[[], float] = time.time,
                 source: Callable[[str], str] = lambda peer_id: "") -> None:
        """``source``: the remote address of this node's connection to a peer ("" when
        unknown), by which the routing table caps contacts per network (see
        :meth:`RoutingTable.place`)."""
        self.peer_id = peer_id
        self.settings = s = settings or DhtSettings()
        s.limits.k = s.k
        self._sign, self._rpc, self._clock = sign, rpc, clock
        self.gate = RecordGate(clock=clock)
        self.table = RoutingTable(peer_id, s.limits, check=self.gate.check, source=source)
        self.providers = ProviderStore(max_per_key=s.k, clock=clock)
        self.rate = RateLimit(s.requests_per_second, s.request_burst)
        self.counters: Counter[str] = Counter()
        self._addresses = tuple(addresses)
        self._record: SignedPresence | None = None
        self._record_wire: tuple[SignedPresence, str] | None = None
        #: Peers already warned about for speaking another wire version (bounded).
        self._other_versions: set[str] = set()
        self._provided: dict[str, SignedPresence] = {}

    # -- this node's own record --------------------------------------------------------

    @property
    def addresses(self) -> tuple[str, ...]:
        """What this node's record says it listens on."""
        return self._addresses

    @addresses.setter
    def addresses(self, addresses: Sequence[str]) -> None:
        self._addresses, self._record = tuple(addresses), None

    def record(self) -> SignedPresence:
        """This node's current peer record (re-signed past half its lifetime)."""
        if self._record is None or self._half_spent(self._record):
            self._record = self._sign(PEER_SCOPE, self._addresses, self.settings.record_lifetime)
        return self._record

    def _own_wire(self) -> str:
        # Sent in every request and answer: encoded once per signing.
        record = self.record()
        if self._record_wire is None or self._record_wire[0] is not record:
            self._record_wire = (record, encode(record))
        return self._record_wire[1]

    def _half_spent(self, record: SignedPresence) -> bool:
        return (record.expires - self._clock() * 1000) < self.settings.record_lifetime * 500

    # -- answering ---------------------------------------------------------------------

    async def handle(self, sender: str, request: object) -> dict[str, Any]:
        """Answer one request from ``sender`` (a peer id the channel proved)."""
        if not self.rate.allow(sender):
            self.counters["rate limited"] += 1
            raise DhtError("rate limited: slow down")
        if not isinstance(request, dict) or not isinstance(request.get("op"), str):
            self.counters["malformed request"] += 1
            raise DhtError("malformed request: expected {\"op\": ...}")
        op = request["op"]
        version = request.get("v", 1)
        if version != WIRE_VERSION:
            self.counters["refused: other wire version"] += 1
            raise DhtError(f"unsupported version: this node speaks DHT wire version "
                           f"{WIRE_VERSION}, the request is version {str(version)[:8]}; fix: "
                           f"run the same dht-discovery version (1.1 or later) on every node")
        if "from" in request:  # the asker's own record: it just proved it is alive
            self._heard_from(sender, request["from"])
        reply: dict[str, Any] = {"v": WIRE_VERSION, "self": self._own_wire()}
        try:
            if op == "ping":
                pass
            elif op == "find_node":
                key = parse_key(request.get("key"))
                exact = self.table.at(key) if request.get("exact") is True else None
                if exact is not None and exact.peer_id != sender:
                    # A peer lookup ends at the peer's record: the rest would go unread.
                    reply["nodes"] = [self.gate.wire_form(exact.record)]
                else:
                    reply["nodes"] = self._closest_for(key, sender)
            elif op == "get_providers":
                key = parse_key(request.get("key"))
                reply["providers"] = [encode(r) for r in self.providers.get(key)]
                reply["nodes"] = self._closest_for(key, sender)
            elif op == "add_provider":
                key = parse_key(request.get("key"))
                reply["stored"] = self.providers.add(key, request.get("record"),
                                                     sender=sender)
            else:
                raise DhtError(f"unknown op {op[:40]!r}")
        except ValueError as exc:
            self.counters["malformed request"] += 1
            raise DhtError(f"malformed request: {exc}") from exc
        self.counters[f"answered {op}"] += 1
        return reply

    def _heard_from(self, sender: str, raw: object) -> None:
        record = self.gate.known(raw)
        if record is None and not self.table.wants(sender):
            # Its bucket is full: it can only wait as a replacement, so it is verified if
            # and when it is promoted, not on every request of every stranger.
            try:
                record = decode(raw)
            except AnnouncementError:
                self.gate.refused["malformed"] += 1
                return
            if record.peer_id == sender:
                self.table.add(record, alive=True, verified=False)
            return
        if record is None or record.peer_id != sender:
            record = self.gate.peer(raw, expect=sender)
        if record is not None:
            self.table.add(record, alive=True)

    def _closest_for(self, key: int, asker: str) -> list[str]:
        # The asker already has our own record ("self" of the reply).
        records = self.table.closest(key, self.settings.k, exclude=frozenset({asker}))
        return self.gate.wire_forms(records)

    # -- asking ------------------------------------------------------------------------

    async def _ask(self, peer_id: str, addresses: Sequence[str],
                   request: dict[str, Any]) -> dict[str, Any]:
        request = {"v": WIRE_VERSION, **request, "from": self._own_wire()}
        try:
            async with asyncio.timeout(self.settings.request_timeout):
                reply = await self._rpc.call(peer_id, addresses, request)
            if not isinstance(reply, dict):
                raise DhtError("malformed reply")
            if reply.get("v", 1) != WIRE_VERSION:
                raise self._other_version(peer_id, reply.get("v", 1))
            record = self.gate.peer(reply.get("self"), expect=peer_id)
            if record is None:
                raise DhtError(f"{peer_id} answered without a valid record of itself")
        except Exception:
            self.counters["requests failed"] += 1
            if self.table.failed(peer_id):
                log.debug("evicted %s: it stopped answering", peer_id)
            raise
        self.table.add(record, alive=True)
        reply["self"] = record
        return reply

    async def ping(self, peer_id: str, addresses: Sequence[str]) -> SignedPresence:
        """Ask a peer for its record (it joins our table); raises when it does not answer."""
        reply = await self._ask(peer_id, addresses, {"op": "ping"})
        record: SignedPresence = reply["self"]
        return record

    def _other_version(self, peer_id: str, version: object) -> DhtError:
        self.counters["peers on another wire version"] += 1
        text = (f"{peer_id} answered in DHT wire version {str(version)[:8]}, this node "
                f"speaks {WIRE_VERSION}; fix: run the same dht-discovery version (1.1 or "
                f"later) on every node")
        if peer_id not in self._other_versions and len(self._other_versions) < 256:
            self._other_versions.add(peer_id)
            log.warning("%s", text)
        return DhtError(text)

    def _offered(self, reply: dict[str, Any]) -> list[Offer]:
        # Neither decoded nor verified here: the lookup verifies the records it uses.
        # (wire_peer's test, inline: this runs for every record of every answer.)
        nodes = reply.get("nodes")
        if not isinstance(nodes, list):
            return []
        out, own, malformed = [], self.peer_id, 0
        for raw in nodes[: self.settings.k]:
            if type(raw) is not str or not PEER_ID_LENGTH < len(raw) <= MAX_RECORD_LENGTH:
                malformed += 1
            elif (peer := raw[:PEER_ID_LENGTH]) != own:
                out.append(Offer(peer, raw))
        if malformed:
            self.gate.refused["malformed"] += malformed
        return out

    def _check_offer(self, offer: Offer) -> SignedPresence | None:
        return self.gate.peer(offer.wire, expect=offer.peer_id)

    async def lookup_key(self, key: int, *, target: str | None = None,
                         deadline: float | None = None,
                         budget: DialBudget | None = None) -> LookupResult:
        """The k closest live contacts to ``key`` (stops early when ``target`` is found),
        within ``deadline`` seconds (``lookup_timeout`` unless given), asking only the
        peers ``budget`` allows, if given."""
        request: dict[str, Any] = {"op": "find_node", "key": key_hex(key)}
        if target is not None:
            request["exact"] = True

        async def query(contact: SignedPresence) -> list[Offer]:
            return self._offered(await self._ask(contact.peer_id, contact.addresses, request))

        self.table.touched(key)
        result = await lookup(key, self.table.closest(key, self.settings.k), query,
                              k=self.settings.k, alpha=self.settings.alpha, target=target,
                              deadline=self.settings.lookup_timeout if deadline is None
                              else deadline, check=self._check_offer, budget=budget)
        self.counters["lookups"] += 1
        return result

    async def find_peer(self, peer_id: str) -> SignedPresence | None:
        """The newest signed record of ``peer_id`` (its current addresses), or None."""
        return (await self.find_peer_result(peer_id)).found

    async def find_peer_result(self, peer_id: str) -> LookupResult:
        """:meth:`find_peer`, with the lookup's hops and request counts."""
        entry = self.table.get(peer_id)
        if entry is not None:
            return LookupResult(closest=[entry.record], found=entry.record)
        result = await self.lookup_key(peer_key(peer_id), target=peer_id)
        self.counters["peers found" if result.found else "peers not found"] += 1
        return result

    # -- topics ------------------------------------------------------------------------

    async def provide(self, topic: str) -> int:
        """Announce this node as a provider of ``topic`` to the k nodes closest to it;
        returns how many stored the record."""
        key = topic_key(topic)
        record = self._provided.get(topic)
        if record is None or self._half_spent(record):
            record = self._sign(provider_scope(key), self._addresses,
                                self.settings.record_lifetime)
            self._provided[topic] = record
        self.providers.add(key, encode(record))
        closest = (await self.lookup_key(key)).closest
        request = {"op": "add_provider", "key": key_hex(key), "record": encode(record)}

        async def store(contact: SignedPresence) -> bool:
            try:
                reply = await self._ask(contact.peer_id, contact.addresses, request)
            except Exception:
                return False
            return reply.get("stored") is True

        stored = await asyncio.gather(*(store(c) for c in closest))
        return sum(stored)

    async def find_providers(self, topic: str, *, limit: int = 20) -> list[SignedPresence]:
        """Verified records of up to ``limit`` peers providing ``topic``."""
        key = topic_key(topic)
        found: dict[str, SignedPresence] = {r.peer_id: r for r in self.providers.get(key)}

        async def query(contact: SignedPresence) -> list[Offer]:
            reply = await self._ask(contact.peer_id, contact.addresses,
                                    {"op": "get_providers", "key": key_hex(key)})
            raw = reply.get("providers")
            for item in raw[: self.settings.k] if isinstance(raw, list) else []:
                record = self._provider(key, item)
                if record is not None:
                    found.setdefault(record.peer_id, record)
            return self._offered(reply)

        await lookup(key, self.table.closest(key, self.settings.k), query, k=self.settings.k,
                     alpha=self.settings.alpha, deadline=self.settings.lookup_timeout,
                     stop_when=lambda: len(found) >= limit, check=self._check_offer)
        return list(found.values())[:limit]

    def _provider(self, key: int, raw: object) -> SignedPresence | None:
        try:  # signed for another key, it does not verify in this key's scope
            return decode(raw, provider_scope(key)).check(now=self._clock())
        except ValueError:  # AnnouncementError is one
            self.counters["provider records refused"] += 1
            return None

    # -- joining and upkeep ------------------------------------------------------------

    @property
    def join_budget(self) -> int:
        """The most distinct peers one join asks (``join_peers``, or alpha x k)."""
        return self.settings.join_peers or self.settings.alpha * self.settings.k

    async def join(self, contacts: Sequence[tuple[str, Sequence[str]]]) -> int:
        """Ping the bootstrap contacts, then look up our own key to fill the table;
        returns how many bootstrap contacts answered. At most :attr:`join_budget`
        distinct peers are asked in all, alpha at a time."""
        budget = DialBudget(self.join_budget)
        answered = 0
        for peer_id, addresses in contacts:
            if not budget.allows(peer_id):
                break
            budget.spend(peer_id)
            try:
                await self.ping(peer_id, addresses)
                answered += 1
            except Exception as exc:
                log.info("bootstrap peer %s did not answer: %s", peer_id[:12], exc)
        if len(self.table):
            await self.lookup_key(peer_key(self.peer_id), budget=budget)
            if self.settings.join_refresh:
                # One at a time: each starts from the contacts the ones before found. A
                # bucket deeper than JOIN_BUCKETS is a ground id's (2^32 tries), not a
                # network's: the lookups stop there. They share one lookup-timeout: with
                # contacts that never answer, each would run to its own deadline (33 of
                # them), the node meanwhile neither providing nor looking anything up.
                # The buckets left out fill as they do without join_refresh (lookups and
                # requests through them; refresh() looks up the non-empty ones). Once
                # the budget is spent, a bucket's lookup could only ask peers already in
                # the table again: the join ends there.
                loop = asyncio.get_running_loop()
                end = loop.time() + self.settings.lookup_timeout
                for index in range(min(self.table.occupied_range() - 1, JOIN_BUCKETS)):
                    left = end - loop.time()
                    if left <= 0 or budget.spent:
                        break
                    await self.lookup_key(self._key_in_bucket(index), deadline=left,
                                          budget=budget)
        self.counters["join peers asked"] = len(budget.asked)
        return answered

    def _key_in_bucket(self, index: int) -> int:
        # A random key sharing exactly `index` leading bits with ours.
        bit = KEY_BITS - 1 - index
        return (peer_key(self.peer_id) ^ (1 << bit)) & ~((1 << bit) - 1) | random.getrandbits(bit)

    async def refresh(self, *, all_buckets: bool = False) -> None:
        """Ping every contact (evicting the dead, promoting replacements), then look up a
        random key in every bucket no lookup touched for ``refresh_interval``, and our
        own key: all within one ``refresh_timeout`` (what is left undone waits for the
        next refresh)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + self.settings.refresh_timeout
        try:
            async with asyncio.timeout_at(end):
                await self._ping_contacts()
        except TimeoutError:
            self._cut_short("pinging its contacts")
            return
        older = -1.0 if all_buckets else self.settings.refresh_interval
        keys = [self._key_in_bucket(i) for i in self.table.stale_buckets(older) if i < KEY_BITS]
        for key in (peer_key(self.peer_id), *keys):  # its neighbourhood first
            left = end - loop.time()
            if left <= 0:
                self._cut_short("looking up its buckets")
                return
            await self.lookup_key(key, deadline=left)
        self.counters["refreshes"] += 1

    def _cut_short(self, doing: str) -> None:
        self.counters["refreshes cut short"] += 1
        log.info("a refresh ran out of its %gs while %s; the next one goes on",
                 self.settings.refresh_timeout, doing)

    async def _ping_contacts(self) -> None:
        semaphore = asyncio.Semaphore(8)

        async def check(peer_id: str, addresses: Sequence[str]) -> None:
            async with semaphore:
                try:
                    await self.ping(peer_id, addresses)
                except Exception:
                    self.table.failed(peer_id)
                    if self.table.get(peer_id) is not None:
                        self.table.remove(peer_id)

        checked: set[str] = set()
        for _ in range(self.settings.k + 1):  # then the replacements each pass promoted
            entries = [e for e in self.table.entries() if e.peer_id not in checked]
            if not entries:
                break
            checked.update(e.peer_id for e in entries)
            await asyncio.gather(*(check(e.peer_id, e.record.addresses) for e in entries))

    def stats(self) -> dict[str, int]:
        """Counters for ``p2phost peers``: table size, records, requests, refusals."""
        return {"contacts": len(self.table), **self.counters, **self.table.counters,
                **{f"records {k}": v for k, v in self.gate.counters().items()},
                "rate limited": self.rate.refused}
