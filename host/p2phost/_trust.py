"""Which peers a node accepts: the ``[trust]`` table of p2phost.toml and ``.p2phost/known_peers``.

```toml
[trust]
policy = "allowlist"            # "open" (default), "allowlist" or "tofu"
peers = ["PEERID", ...]         # always trusted (with "allowlist": the list)
replay-window = 600             # seconds a sealed broker/database message stays acceptable
```

``open`` accepts every peer that proves its id. ``allowlist`` accepts the peers of
``peers`` and of the known-peers file (``p2phost trust add``). ``tofu`` (trust on first
use) accepts a new peer and records it with the name it gives in its hello; later, a
*different* peer id under a known name is refused, the way ssh refuses a changed host key,
until ``p2phost trust remove NAME``. The policy is asked at the handshake, with the proven
peer id (docs/security.md).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2phost_sdk import is_peer_id

log = logging.getLogger("p2phost.trust")

POLICIES = ("open", "allowlist", "tofu")
KNOWN_PEERS = "known_peers"
DEFAULT_REPLAY_WINDOW = 600.0
#: ``problem(table, key, message, fix)``: how the manifest reader collects a problem.
Problem = Callable[[str, str | None, str, str | None], None]
_HEADER = ("# p2phost known peers (trust on first use and `p2phost trust add`): one peer a line,\n"
           "# PEER-ID NAME ADDED HOW. Edit with `p2phost trust add/remove`.\n")


@dataclass(frozen=True)
class TrustSettings:
    """The ``[trust]`` table."""

    policy: str = "open"
    peers: tuple[str, ...] = ()
    #: Seconds a sealed message (broker and database media) is accepted after it was
    #: sealed; within it, a replayed one is refused.
    replay_window: float = DEFAULT_REPLAY_WINDOW


def read_trust(table: dict[str, Any], problem: Problem) -> TrustSettings:
    """Validate ``[trust]``, reporting each bad key through ``problem``."""
    settings: dict[str, Any] = {}
    for key, value in table.items():
        if key == "policy":
            if value in POLICIES:
                settings["policy"] = value
            else:
                problem("trust", key, f"unknown policy {value!r}",
                        f'policy = one of {", ".join(repr(p) for p in POLICIES)}')
        elif key == "peers":
            if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
                problem("trust", key, f"expected a list of peer ids, got {value!r}", None)
                continue
            bad = [p for p in value if not is_peer_id(p)]
            if bad:
                problem("trust", key, f"{bad[0]!r} is not a peer id",
                        "copy the id that `p2phost id` prints in that node's project")
            settings["peers"] = tuple(p for p in value if is_peer_id(p))
        elif key == "replay-window":
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
                settings["replay_window"] = float(value)
            else:
                problem("trust", key, f"expected a number of seconds > 0, got {value!r}", None)
        else:
            problem("trust", key, "unknown key (known: policy, peers, replay-window)", None)
    return TrustSettings(**settings)


@dataclass(frozen=True)
class KnownPeer:
    """One line of the known-peers file."""

    peer_id: str
    #: The name the peer gave in its hello ("" if none).
    name: str
    #: When it was added, ISO 8601 UTC.
    added: str
    #: ``tofu`` (learnt on first use) or ``added`` (``p2phost trust add``).
    how: str

    def line(self) -> str:
        """This peer as a line of the file."""
        return f"{self.peer_id} {self.name or '-'} {self.added} {self.how}\n"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class KnownPeers:
    """``.p2phost/known_peers``: read when it changed, written under a lock (the running
    node learns peers while ``p2phost trust`` edits the file)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._peers: list[KnownPeer] = []

    def peers(self) -> list[KnownPeer]:
        """Every known peer, as the file says now."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._stamp, self._peers = None, []
            return []
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._stamp:
            self._peers, self._stamp = self._parse(self.path.read_text(encoding="utf-8")), stamp
        return list(self._peers)

    def _parse(self, text: str) -> list[KnownPeer]:
        peers = []
        for number, line in enumerate(text.splitlines(), 1):
            fields = line.split()
            if not fields or fields[0].startswith("#"):
                continue
            if len(fields) != 4 or not is_peer_id(fields[0]):
                log.warning("%s:%d: ignoring a line that is not PEER-ID NAME ADDED HOW",
                            self.path, number)
                continue
            name = "" if fields[1] == "-" else fields[1]
            peers.append(KnownPeer(fields[0], name, fields[2], fields[3]))
        return peers

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(KNOWN_PEERS + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def add(self, peer_id: str, name: str = "", how: str = "added") -> KnownPeer:
        """Record a peer (names are one word); returns the entry."""
        peer = KnownPeer(peer_id, "".join(name.split()), _now(), how)
        with self._locked():
            new = not self.path.exists()
            with open(self.path, "a", encoding="utf-8") as out:
                out.write((_HEADER if new else "") + peer.line())
        return peer

    def remove(self, key: str) -> list[KnownPeer]:
        """Forget every entry whose peer id or name is ``key``; returns them."""
        with self._locked():
            kept: list[KnownPeer] = []
            gone: list[KnownPeer] = []
            for peer in self.peers():
                (gone if key in (peer.peer_id, peer.name) else kept).append(peer)
            if gone:
                tmp = self.path.with_name(KNOWN_PEERS + ".tmp")
                tmp.write_text(_HEADER + "".join(p.line() for p in kept), encoding="utf-8")
                os.replace(tmp, self.path)
        return gone


class TrustPolicy:
    """Decides at the handshake whether a proven peer may connect."""

    def __init__(self, settings: TrustSettings, known: KnownPeers | None = None) -> None:
        self.settings = settings
        self.known = known

    @property
    def policy(self) -> str:
        """``open``, ``allowlist`` or ``tofu``."""
        return self.settings.policy

    def check(self, peer_id: str, name: str | None) -> str | None:
        """Why ``peer_id`` must be refused, or None to accept it.

        Asked twice per connection: with ``name`` None as soon as the channel proved the
        id (before this node says anything about itself), then with the name from the
        peer's hello. Under ``tofu`` the second call records a new peer.
        """
        policy = self.settings.policy
        if policy == "open" or peer_id in self.settings.peers:
            return None
        known = self.known.peers() if self.known is not None else []
        if any(p.peer_id == peer_id for p in known):
            return None
        if policy == "allowlist":
            return ("not in the allowlist ([trust] peers in p2phost.toml and "
                    ".p2phost/known_peers); to accept it: p2phost trust add " + peer_id)
        if name is None:
            return None  # tofu: the name in its hello decides
        name = "".join(name.split())
        holder = next((p for p in known if name and p.name == name), None)
        if holder is not None:
            return (f"it calls itself {name!r}, but {name!r} is known as {holder.peer_id} "
                    f"(.p2phost/known_peers, since {holder.added}): another key. If {name}'s "
                    f"key changed on purpose: p2phost trust remove {name}")
        if self.known is not None:
            self.known.add(peer_id, name, how="tofu")
        log.warning("trusting new peer %s (%s) on first use", peer_id, name or "no name")
        return None
