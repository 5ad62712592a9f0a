"""A short-lived client node talking to one address, and why reaching it failed.

What ``ping``, ``send`` and ``describe`` share: start a *client* node (the project's
identity, no listeners, no apps), connect to ADDR (retrying with ``--wait``), check the
peer serves a topic, and turn a failed connection into an error naming its likely cause
(unreachable, untrusted, no codec or security in common) with the fix.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

from p2phost_sdk import PeerUnavailable, is_peer_id

from .._errors import UserError
from .._project import Project
from .._schemes import scheme_of

if TYPE_CHECKING:
    from .._runtime import Node

T = TypeVar("T")
REACH_FIX = "check the address, and that a node runs there (`p2phost run` in its project)"


class Unreachable(UserError):
    """The peer could not be reached or did not answer: a runtime failure (exit 1)."""

    exit_code = 1


def _require_transport(project: Project, address: str) -> None:
    """Refuse an address no declared transport serves, naming the plugin that would."""
    from .._install import plugin_sources
    from .._plugins import PluginManager
    from .._schemes import no_transport, served_by

    if "://" not in address and (is_peer_id(address) or ":" not in address):
        return  # a peer id, found by discovery (or a name it will say it never found)
    resolved, _ = PluginManager(project).resolve()
    served = served_by(m for _, _, m, _ in resolved)
    if scheme_of(address) in served:
        return
    from p2phost_sdk import PluginMetadata

    installed = []
    for dist in PluginManager(project).available().values():
        try:
            installed.append(PluginMetadata.from_distribution(dist))
        except UserError:
            continue
    raise no_transport(address, "this project", served, installed,
                       plugin_sources(None, project.manifest.registries))


def _of_kind(project: Project, kind: str) -> list[str]:
    """This project's plugins of ``kind`` (security, codec)."""
    from .._plugins import PluginManager

    resolved, _ = PluginManager(project).resolve()
    return [m.name for _, _, m, _ in resolved if kind in m.kinds]


def _offers(project: Project) -> str:
    """What this side offers in a handshake: its security and codec plugins."""
    return (f"this project offers security {', '.join(_of_kind(project, 'security')) or 'none'}"
            f" and codecs {', '.join(_of_kind(project, 'codec')) or 'none'}")


#: What a handshake failure says when the two sides secure connections differently: the
#: security plugins' own errors ("noise handshake with ... failed"), or a peer that reads
#: the other's handshake as a broken hello.
_SECURITY_MISMATCH = (" handshake with ", "expected a hello", "hello is not",
                      "handshake did not finish")


#: What the services behind the inbox transports are called in a fix.
_SERVICES = {"redis": "Redis", "nats": "the NATS server", "amqp": "the AMQP broker (RabbitMQ)",
             "mqtt": "the MQTT broker", "postgresql": "PostgreSQL", "postgres": "PostgreSQL"}
#: "cannot reach MEDIUM" (no "#PEERID" after it): the broker is down, not the peer.
_MEDIUM_DOWN = re.compile(r"cannot reach [^\s#]+( \(|: )")


def _broker_fix(address: str, text: str) -> str | None:
    """The fix when the broker or database behind an inbox address is what failed."""
    if "durable = true" in text:
        return ("set durable = true under [config.nats-transport] in p2phost.toml, in this "
                "project and the receiver's")
    if "#" not in address or not _MEDIUM_DOWN.search(text):
        return None
    scheme = scheme_of(address)
    parts = urlsplit(address)
    try:
        where = f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)
    except ValueError:
        where = str(parts.hostname)
    service = _SERVICES.get(scheme, f"the {scheme} server")
    return (f"check that {service} runs at {where} and accepts this project's connections "
            "(the receiving node need not run: the broker keeps its messages)")


#: A first frame's length prefix (4 bytes, big-endian) that is text a known protocol starts
#: with: "HTTP" is 1213486160 bytes, a Redis error line "-ERR" 759517778.
_SPEAKERS = (("HTTP", "an HTTP server"), ("-ERR", "a Redis server"), ("-NOAUTH", "a Redis server"),
             ("SSH-", "an SSH server"), ("AMQP", "an AMQP broker"), ("INFO", "a NATS server"),
             ("220 ", "an SMTP or FTP server"))
_FRAME = re.compile(r"sent a frame of (\d+) bytes")


def _not_p2phost(text: str) -> str | None:
    """How the other side answered when its first frame cannot be a p2phost hello: a
    length prefix that reads as a known protocol's text, or one no handshake would send."""
    match = _FRAME.search(text)
    if match is None or ("handshake" not in text and int(match[1]) < 1 << 24):
        return None
    size = int(match[1])
    if size >= 1 << 32:
        return None
    head = size.to_bytes(4, "big").decode("latin-1")
    for start, who in _SPEAKERS:
        if start.startswith(head) or head.startswith(start):
            return f"it answered like {who}"
    if head.isprintable() and head.isascii():
        return f"it answered with text starting {head!r}, not a p2phost hello"
    return f"its first frame claims {size} bytes, which no p2phost hello does"


def too_large(exc: Exception) -> UserError:
    """A body over a frame limit: say whose limit it is and which setting moves it (a
    runtime failure like an unreachable peer: exit 1; the connection stays up)."""
    # (the message without the fix the error carries; the outbox's words embed theirs)
    text, _, fix = str(exc.args[0] if exc.args else exc).partition("; fix: ")
    fix = fix or getattr(exc, "fix", "")
    if "announced" in text:
        whose = "the peer's limit"
        fix = fix or "send it in smaller parts, or raise max-frame-size in [node] of that " \
                     "node's p2phost.toml"
    elif "size limit of the medium" in text:
        whose = "the medium's limit, not a setting"
        fix = fix or "send it in smaller parts"
    else:
        text = text.replace("(max-frame-size in [node] of p2phost.toml)", "").rstrip()
        whose = "this node's limit: max-frame-size in [node] of this project's p2phost.toml"
        fix = "send it in smaller parts, or raise max-frame-size in [node] of this " \
              "project's p2phost.toml (the peer's own limit must allow it too)"
    return Unreachable(f"FrameTooLarge: {text} ({whose})", fix=fix)


#: A peer that answered but refused, for a reason with no fix of its own.
_REFUSED_FIX = ("the node answers but refused the handshake (see above); `p2phost run --check` "
                "in both projects shows what each side runs")


def unreachable(project: Project, address: str, exc: Exception) -> UserError:
    """Why ``address`` failed: a broker that is down, unreachable, or reached but the
    two sides disagree (exit 1). A malformed address never gets here: ``as_client`` checks
    it first with the transport's ``check_address`` (a usage error, exit 2)."""
    text = str(exc)
    stranger = _not_p2phost(text)
    if stranger is not None:
        return Unreachable(f"the other side at {address} is not a p2phost node ({stranger})",
                           fix="check the address and port: `p2phost run` of the node prints "
                               "the addresses it listens on")
    if "handshake did not finish" in text:
        return Unreachable(f"{text}; something accepts connections at {address} but did not "
                           "answer the handshake: it may not be a p2phost node, or it secures "
                           "connections differently",
                           fix=f"check the address and port; if a p2phost node runs there: "
                               f"{_offers(project)}, and `p2phost run --check` in its project "
                               "shows what it offers")
    broker = _broker_fix(address, text)
    if broker is not None:
        return Unreachable(text, fix=broker)
    from .._runtime._errors import not_trusted_of, refusal_of, untrusted  # (once it failed)

    ours = not_trusted_of(exc)
    if ours is not None:  # this project's trust policy refused the node it reached
        return Unreachable(f"{text}; the node runs, but this project does not trust it",
                           fix=f"in this project: p2phost trust add {ours.peer_id}")
    if untrusted(exc):  # the node's trust policy refused the handshake
        return Unreachable(f"{text}; the node runs, but does not trust this project",
                           fix="in the node's project: p2phost trust add "
                               f"{project.identity().peer_id}")
    if "no codec in common" in text:
        return Unreachable(f"{text}; the node runs, but no codec is on both sides",
                           fix=f"{_offers(project)}: install a codec the node has, e.g. "
                               "p2phost plugin install json-codec (in one of the projects)")
    if any(sign in text for sign in _SECURITY_MISMATCH):
        return Unreachable(f"{text}; the node answers, but the two sides do not agree on "
                           "how to secure the connection",
                           fix=f"{_offers(project)}; run `p2phost run --check` in the "
                               "node's project and declare the same security plugin in both")
    refused = refusal_of(exc)
    if refused is not None:  # at its limits, shutting down, or another reason it gave
        # The message, and the fix apart (the error's words end with it).
        said = text.removesuffix(f"; fix: {refused.fix}") if refused.fix else text
        return Unreachable(said, fix=refused.fix or _REFUSED_FIX)
    if " is full (" in text and "nothing was stored" in text:
        return Unreachable(text, fix="wait until that node has run and taken what waits, or ask "
                                     "its operator to raise the limit in its p2phost.toml")
    if "handshake failed" in text and " closed the connection" in text \
            and not _of_kind(project, "security"):
        # A listener with a security plugin reads this side's plaintext hello as a broken
        # security handshake and closes without a GOODBYE (one without says every refusal
        # in a GOODBYE, docs/wire.md): the other way round from the mismatch above.
        return Unreachable(f"{text}; the node answers, but closed the connection in the "
                           "handshake without saying why: the two sides may not agree on how "
                           "to secure the connection (this project has no security plugin; "
                           "the node probably has one)",
                           fix=f"{_offers(project)}; run `p2phost run --check` in the node's "
                               "project and install the security plugin it shows here too, "
                               "e.g. p2phost plugin install noise-security")
    if "handshake failed" in text:
        return Unreachable(text, fix=_REFUSED_FIX)
    return Unreachable(text, fix=REACH_FIX)


async def as_client(project: Project, address: str,
                     work: Callable[[Node, str], Awaitable[T]], *, wait: float = 0.0,
                     stored: Callable[[Node], Awaitable[T]] | None = None) -> T:
    from .._runtime._errors import refusal_of
    from .._runtime.node._assemble import node_for_project

    _require_transport(project, address)
    node = node_for_project(project, client=True)
    node.check_address(address)  # malformed: a usage error (exit 2) before anything connects
    async with node:
        if stored is not None and node.stores_letters(address):
            # An inbox on a medium that holds messages: no handshake, the peer may not run.
            return await stored(node)
        deadline = time.monotonic() + wait
        while True:
            try:
                peer = await node.connect(address)
                break
            except PeerUnavailable as exc:
                # --wait: a node that is starting refuses connections for a moment, and
                # one at its limits may have room soon; a node that answers but disagrees
                # (a failed handshake, a refusal for another reason) will not change its
                # mind.
                refused = refusal_of(exc)
                if time.monotonic() >= deadline or (
                        "handshake" in str(exc) and (refused is None or not refused.at_limit)):
                    raise unreachable(project, address, exc) from exc
                await asyncio.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        return await work(node, peer)


def _topics_of(node: Node, peer: str) -> frozenset[str]:
    return next((p.topics for p in node.peers() if p.peer_id == peer), frozenset())


def require_topic(node: Node, peer: str, address: str, topic: str, fix: str) -> None:
    topics = _topics_of(node, peer)
    if topic not in topics:
        from .._runtime.wire._said import named  # (the node's code is loaded by now)
        has = named(topics)
        raise UserError(f"the node at {address} has no app for topic {topic!r} "
                        f"(its topics: {has})",
                        fix=fix)
