"""App-level authorisation: which peers may call a topic.

A handler marked with ``allow`` answers only the peers it names (or those a predicate
accepts); the host answers every other peer's request with an error naming the reason,
and drops (and logs) its messages, before the app sees anything::

    class Admin(App):
        @handler("shutdown", allow=["PEER-ID-OF-THE-OPERATOR"])
        async def shutdown(self, message: Message) -> str: ...

        @allow(lambda peer: peer in TEAM)
        @handler("report")
        async def report(self, message: Message) -> None: ...

Peer ids are proven by the channel's security (see docs/security.md): without a security
plugin, a peer can claim any id and authorisation protects nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

#: Who may call a topic: peer ids, or a predicate over the caller's peer id.
Allow = Iterable[str] | Callable[[str], bool]
_F = TypeVar("_F", bound=Callable[..., Awaitable[Any]])


def permission(who: Allow) -> Callable[[str], bool]:
    """``who`` as a predicate over peer ids (a collection of ids becomes membership)."""
    if callable(who):
        return who
    if isinstance(who, str):
        raise TypeError("allow= takes a list of peer ids or a predicate, not one string "
                        "(write allow=[PEER_ID])")
    peers = frozenset(who)
    return peers.__contains__


def allow(who: Allow) -> Callable[[_F], _F]:
    """Let only ``who`` (peer ids, or a predicate over the caller's peer id) call the
    handler this decorates; the same as ``handler(topic, allow=who)``."""
    check = permission(who)

    def mark(func: _F) -> _F:
        func.__p2phost_allow__ = check  # type: ignore[attr-defined]
        return func

    return mark


def permission_of(handler: Callable[..., Any]) -> Callable[[str], bool] | None:
    """The predicate that guards ``handler`` (a method of an app), or None: anyone."""
    check = getattr(handler, "__p2phost_allow__", None)
    return check if callable(check) else None
