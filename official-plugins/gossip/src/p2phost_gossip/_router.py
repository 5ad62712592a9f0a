"""One node's gossip router, with no p2phost node under it: frames go out through a :class:`Wire`.

GossipSub's mesh (degree D per topic, kept between D-low and D-high by the heartbeat, GRAFT
and PRUNE, fan-out for topics published to but not subscribed) carries Plumtree's epidemic
broadcast tree (Leitao et al. 2007): a message is pushed eagerly only along links that
delivered one first; a link that delivers a duplicate is told ``lazy`` and from then on
only announces ids (IHAVE, batched per heartbeat). A message announced but not received
within ``graft_timeout`` is asked for (IWANT), which makes that link eager again: the tree
repairs itself around dead or slow peers. So a node receives about one copy of each
message instead of D, and the mesh's other links are the repair paths.

The plugin gives it a Wire over the node's own connections; tests give it an in-memory
one, so hundreds of routers run in one process in seconds.
"""

from __future__ import annotations

import itertools
import logging
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

from ._cache import MessageCache, SeenCache, WaitList
from ._messages import (
    GossipMessage,
    InvalidFrame,
    Signer,
    Validator,
    Wire,
    check_frame,
    check_message,
    check_signature,
    make_message,
)
from ._score import PeerScores
from ._settings import GossipSettings

log = logging.getLogger("p2phost.plugin.gossip")
#: Topics one peer may say it subscribes to, and the longest topic name kept
#: (docs/wire.md section 6): what a peer's ``subscribe`` frames may cost this node.
MAX_PEER_TOPICS = 1000
MAX_TOPIC_LENGTH = 256


class Router:
    """Meshes per topic, the broadcast tree on them, repair, fan-out and peer scores."""

    def __init__(self, peer_id: str, wire: Wire, settings: GossipSettings | None = None, *,
                 on_message: Callable[[GossipMessage], None] | None = None,
                 validate: Validator | None = None,
                 sign: Signer | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None) -> None:
        self.peer_id = peer_id
        self.settings = s = settings or GossipSettings()
        self.on_message = on_message
        self.validate = validate
        self.sign = sign
        self._wire, self._clock = wire, clock
        self._rng = rng or random.Random()
        self.topics: set[str] = set()
        #: Connected peers and the topics each subscribes to.
        self.peers: dict[str, set[str]] = {}
        #: Per topic, mesh peers and whether the link is eager (True) or lazy.
        self.mesh: dict[str, dict[str, bool]] = {}
        self.fanout: dict[str, dict[str, bool]] = {}
        self._fanout_used: dict[str, float] = {}
        self._backoff: dict[tuple[str, str], float] = {}
        self._lazy_sent: dict[tuple[str, str], float] = {}
        self._ihave: defaultdict[str, defaultdict[str, list[str]]] = defaultdict(
            lambda: defaultdict(list))
        self._missing = WaitList(s.seen_size)
        self.seen = SeenCache(s.seen_size)
        self.cache = MessageCache(s.history)
        self.scores = PeerScores(s.prune_threshold, s.graylist_threshold, s.decay)
        self.counters: Counter[str] = Counter()
        # Sequence numbers from the clock: a restarted node does not reuse old ids.
        self._seq = itertools.count(time.time_ns())

    # -- peers and subscriptions -------------------------------------------------------

    def peer_joined(self, peer_id: str) -> None:
        """A peer connected: tell it this node's topics."""
        if peer_id == self.peer_id or peer_id in self.peers:
            return
        self.peers[peer_id] = set()
        if self.topics:
            self._send(peer_id, {"op": "subscribe", "topics": sorted(self.topics)})

    def peer_left(self, peer_id: str) -> None:
        """A peer's connection is gone: it leaves every mesh and fan-out set."""
        self.peers.pop(peer_id, None)
        for links in itertools.chain(self.mesh.values(), self.fanout.values()):
            links.pop(peer_id, None)
        self._ihave.pop(peer_id, None)
        for key in [k for k in self._lazy_sent if k[1] == peer_id]:
            del self._lazy_sent[key]
        self.scores.forget(peer_id)

    def subscribe(self, topic: str) -> None:
        """Receive ``topic``: announce it and graft a mesh (from the fan-out set if any)."""
        if topic in self.topics:
            return
        self.topics.add(topic)
        links = self.mesh[topic] = {p: True for p in self.fanout.pop(topic, {})
                                    if topic in self.peers.get(p, ())}
        self._fanout_used.pop(topic, None)
        for peer_id in self.peers:
            self._send(peer_id, {"op": "subscribe", "topics": [topic]})
        for peer_id in links:
            self._send(peer_id, {"op": "graft", "topic": topic})
        self._fill(topic, links)

    def unsubscribe(self, topic: str) -> None:
        """Stop receiving ``topic``: prune its mesh and announce it."""
        if topic not in self.topics:
            return
        self.topics.discard(topic)
        for peer_id in self.mesh.pop(topic, {}):
            self._send(peer_id, {"op": "prune", "topic": topic,
                                 "backoff": self.settings.prune_backoff})
        for peer_id in self.peers:
            self._send(peer_id, {"op": "unsubscribe", "topics": [topic]})

    # -- publishing ----------------------------------------------------------------------

    def publish(self, topic: str, data: Any) -> str:
        """Send ``data`` to every subscriber of ``topic``; returns the message id.

        A subscriber publishes into its mesh; a node not subscribed uses a fan-out set of
        D subscribers it knows (kept for ``fanout_ttl`` seconds after its last use).
        """
        frame = make_message(topic, self.peer_id, next(self._seq), data, self.sign)
        message_id: str = frame["id"]
        self.seen.add(message_id)
        self.cache.put(message_id, frame)
        self.counters["published"] += 1
        if topic in self.topics:
            links = self.mesh[topic]
            self._deliver(frame, self.peer_id)
        else:
            links = self.fanout.setdefault(topic, {})
            self._fanout_used[topic] = self._clock()
            for peer_id in [p for p in links if topic not in self.peers.get(p, ())]:
                del links[peer_id]
            if links and not any(links.values()):
                # Every fan-out peer asked for lazy: push to them all again rather than
                # leave the message to IHAVE alone.
                links.update(dict.fromkeys(links, True))
            self._fill(topic, links, graft=False)
        self._forward(frame, links, sender=self.peer_id)
        return message_id

    # -- receiving -----------------------------------------------------------------------

    def handle(self, sender: str, frame: Any) -> None:
        """One frame from ``sender``; a bad one is refused, counted and costs its sender."""
        if sender == self.peer_id:
            return
        if sender not in self.peers:
            self.peer_joined(sender)
        if self.scores.graylisted(sender):
            self.counters["graylisted"] += 1
            return
        try:
            frame = check_frame(frame, self.settings.max_ids)
        except InvalidFrame as exc:
            self._invalid(sender, str(exc))
            return
        op = frame["op"]
        if op == "msg":
            self._on_message(sender, frame)
        elif op == "ihave":
            self._on_ihave(sender, frame["topic"], frame["ids"])
        elif op == "iwant":
            self._on_iwant(sender, frame["ids"])
        elif op == "lazy":
            links = self._links(frame["topic"])
            if links is not None and sender in links:
                links[sender] = False
        elif op == "graft":
            self._on_graft(sender, frame["topic"])
        elif op == "prune":
            self._on_prune(sender, frame["topic"])
        elif op == "subscribe":
            self._on_subscribe(sender, frame["topics"])
        else:  # unsubscribe
            for topic in frame["topics"]:
                self.peers[sender].discard(topic)
                for links in (self.mesh.get(topic), self.fanout.get(topic)):
                    if links is not None:
                        links.pop(sender, None)

    def _on_subscribe(self, sender: str, topics: list[str]) -> None:
        # Bounded per peer, in number and length: every name is kept while the peer is
        # connected, so unbounded, one peer's subscribe frames grew this node's memory
        # without end (1,000 new names a frame).
        known = self.peers[sender]
        for topic in topics:
            if topic in known:
                continue
            if len(topic) > MAX_TOPIC_LENGTH or len(known) >= MAX_PEER_TOPICS:
                self._invalid(sender, "too many or too long topics")
                return
            known.add(topic)

    def _on_message(self, sender: str, frame: dict[str, Any]) -> None:
        self.counters["received"] += 1
        topic = frame["topic"]
        try:
            message_id, digest = check_message(frame, self.settings.max_data)
        except InvalidFrame as exc:
            self._invalid(sender, str(exc))
            return
        if message_id in self.seen:  # a copy of one already checked: no signature check
            self._duplicate(sender, topic)
            return
        if topic not in self.topics:
            # Dropped before its signature is checked: a verification costs far more than
            # the frame, and this node neither delivers nor forwards such a message (nor
            # marks it seen: an unchecked copy must not hide a genuine one later).
            self.counters["not subscribed"] += 1
            return
        try:
            check_signature(frame, digest, required=self.settings.require_signatures)
            if self.validate is not None and not self.validate(topic, frame.get("data")):
                raise InvalidFrame("refused by the topic's validator")
        except InvalidFrame as exc:
            self._invalid(sender, str(exc))
            return
        self.seen.add(message_id)
        self._missing.arrived(message_id)
        self.cache.put(message_id, frame)
        links = self.mesh[topic]
        if sender in links and not links[sender]:
            links[sender] = True  # it delivered first: it is this node's tree parent now
            self._lazy_sent.pop((topic, sender), None)
        self._deliver(frame, sender)
        self._forward(frame, links, sender=sender)

    def _duplicate(self, sender: str, topic: str) -> None:
        self.counters["duplicates"] += 1
        links = self._links(topic)
        if links is not None and links.get(sender):
            links[sender] = False
        key = (topic, sender)
        sent = self._lazy_sent.get(key)
        if sent is None:
            self._lazy_sent[key] = self._clock()
            self._send(sender, {"op": "lazy", "topic": topic})
        elif self._clock() - sent > 2 * self.settings.heartbeat:
            # Told to stop pushing two heartbeats ago and still pushing: a duplicate flood.
            self.counters["duplicate flood"] += 1
            self.scores.penalise(sender, "duplicate", self.settings.duplicate_penalty)

    def _on_ihave(self, sender: str, topic: str, ids: list[str]) -> None:
        if topic not in self.topics:
            return
        now = self._clock()
        for message_id in ids:
            if message_id not in self.seen:
                self._missing.announced(message_id, topic, sender, now)

    def _on_iwant(self, sender: str, ids: list[str]) -> None:
        for message_id in ids:
            frame = self.cache.get(message_id)
            if frame is None:
                continue
            self.counters["iwant answered"] += 1
            self._send(sender, frame)
            links = self._links(frame["topic"])
            if links is not None and sender in links:
                links[sender] = True  # Plumtree's GRAFT: the asker's tree link
                self._lazy_sent.pop((frame["topic"], sender), None)

    def _on_graft(self, sender: str, topic: str) -> None:
        links = self.mesh.get(topic)
        if links is None or sender in links:
            if links is not None:
                links[sender] = True
            return
        backoff = self._backoff.get((topic, sender), 0.0)
        if (self.scores.prunable(sender) or backoff > self._clock()
                or len(links) >= self.settings.d_high):
            self.counters["grafts refused"] += 1
            self._send(sender, {"op": "prune", "topic": topic,
                                "backoff": self.settings.prune_backoff})
            return
        links[sender] = True
        # A peer that grafts a topic subscribes to it, whether or not its SUBSCRIBE came
        # first (it may have been lost): else the heartbeat prunes it as not subscribed,
        # with a backoff both ways. (One of this node's own topics: no bound passed.)
        self.peers.setdefault(sender, set()).add(topic)

    def _on_prune(self, sender: str, topic: str) -> None:
        links = self.mesh.get(topic)
        if links is not None and links.pop(sender, None) is not None:
            self._backoff[(topic, sender)] = self._clock() + self.settings.prune_backoff

    # -- the heartbeat -------------------------------------------------------------------

    def heartbeat(self) -> None:
        """Keep meshes within bounds, expire fan-outs, repair, send IHAVE batches."""
        s, now = self.settings, self._clock()
        self.scores.tick()
        self.cache.shift()
        self._backoff = {k: t for k, t in self._backoff.items() if t > now}
        for topic, links in self.mesh.items():
            for peer_id in list(links):
                if self.scores.prunable(peer_id) or topic not in self.peers.get(peer_id, ()):
                    del links[peer_id]
                    self._prune(topic, peer_id)
            if len(links) < s.d_low:
                self._fill(topic, links)
            if len(links) > s.d_high:
                # Lazy links go first: eager ones carry the tree.
                extra = sorted(links, key=lambda p: (links[p], self._rng.random()))
                for peer_id in extra[:len(links) - s.d]:
                    del links[peer_id]
                    self._prune(topic, peer_id)
        for topic in [t for t, used in self._fanout_used.items() if used + s.fanout_ttl < now]:
            self.fanout.pop(topic, None)
            del self._fanout_used[topic]
        self._repair(now)
        for peer_id, topics in self._ihave.items():
            for topic, ids in topics.items():
                for start in range(0, len(ids), s.max_ids):
                    self.counters["ihave sent"] += 1
                    self._send(peer_id, {"op": "ihave", "topic": topic,
                                         "ids": ids[start:start + s.max_ids]})
        self._ihave.clear()

    def _repair(self, now: float) -> None:
        s = self.settings
        wants: defaultdict[str, list[str]] = defaultdict(list)
        asks, gave_up, broken = self._missing.due(now, s.graft_timeout,
                                                  lambda p: p in self.peers)
        if gave_up:
            self.counters["repair gave up"] += gave_up
        for announcer, count in broken.items():
            # Announced, asked for, never sent: scored like a duplicate flood, so a peer
            # filling the wait list with ids of nothing is graylisted within rounds.
            self.counters["broken promises"] += count
            self.scores.penalise(announcer, "broken promise", s.duplicate_penalty * count)
        for announcer, message_id, topic in asks:
            wants[announcer].append(message_id)
            links = self.mesh.get(topic)
            if links is not None and announcer in links:
                links[announcer] = True
                self._lazy_sent.pop((topic, announcer), None)
        for peer_id, ids in wants.items():
            # Every id here counted a try: each is asked (in frames of max-ids, as IHAVE
            # is sent), not the first 500 alone, the others given up unasked.
            for start in range(0, len(ids), s.max_ids):
                self.counters["iwant sent"] += 1
                self._send(peer_id, {"op": "iwant", "ids": ids[start:start + s.max_ids]})

    # -- helpers -------------------------------------------------------------------------

    def _links(self, topic: str) -> dict[str, bool] | None:
        return self.mesh.get(topic) if topic in self.topics else self.fanout.get(topic)

    def _fill(self, topic: str, links: dict[str, bool], *, graft: bool = True) -> None:
        """Add eager links up to D from connected subscribers of ``topic``."""
        now = self._clock()
        candidates = [p for p, topics in self.peers.items()
                      if topic in topics and p not in links and not self.scores.prunable(p)
                      and self._backoff.get((topic, p), 0.0) <= now]
        self._rng.shuffle(candidates)
        for peer_id in candidates[:max(0, self.settings.d - len(links))]:
            links[peer_id] = True
            if graft:
                self.counters["grafts sent"] += 1
                self._send(peer_id, {"op": "graft", "topic": topic})

    def _prune(self, topic: str, peer_id: str) -> None:
        self.counters["prunes sent"] += 1
        self._backoff[(topic, peer_id)] = self._clock() + self.settings.prune_backoff
        if peer_id in self.peers:
            self._send(peer_id, {"op": "prune", "topic": topic,
                                 "backoff": self.settings.prune_backoff})

    def _forward(self, frame: dict[str, Any], links: dict[str, bool], *, sender: str) -> None:
        for peer_id, eager in links.items():
            if peer_id in (sender, frame["origin"]):
                continue
            if eager:
                self.counters["forwarded"] += 1
                self._send(peer_id, frame)
            else:
                self._ihave[peer_id][frame["topic"]].append(frame["id"])

    def _deliver(self, frame: dict[str, Any], sender: str) -> None:
        self.counters["delivered"] += 1
        if self.on_message is not None:
            message = GossipMessage(frame["topic"], frame["origin"], frame["seq"],
                                    frame.get("data"), frame["id"], sender)
            try:
                self.on_message(message)
            except Exception:  # a subscriber's bug must not stop the relaying
                log.exception("a gossip subscriber failed on %s", frame["id"])

    def _invalid(self, sender: str, reason: str) -> None:
        self.counters["invalid"] += 1
        self.counters[f"invalid: {reason}"] += 1
        self.scores.penalise(sender, "invalid", self.settings.invalid_penalty)
        if self.scores.prunable(sender):
            for topic, links in self.mesh.items():
                if links.pop(sender, None) is not None:
                    self._prune(topic, sender)

    def _send(self, peer_id: str, frame: dict[str, Any]) -> None:
        self._wire.send(peer_id, frame)

    def links(self) -> set[str]:
        """Every peer this router gossips with (mesh and fan-out links)."""
        return {p for links in itertools.chain(self.mesh.values(), self.fanout.values())
                for p in links}

    def stats(self) -> dict[str, int]:
        """Counters, plus mesh and cache sizes (``GossipApp.counters()`` and tests)."""
        found = dict(self.counters)
        found["topics"] = len(self.topics)
        found["links"] = len(self.links())
        found["seen"] = len(self.seen)
        found["cached"] = len(self.cache)
        return found
