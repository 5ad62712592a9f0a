"""Inbox transports: connections over shared media (brokers, databases) with TCP semantics.

On a shared medium every node has an inbox named by its peer id. A plugin for a new
medium implements only :class:`Medium` (connect, one inbox, append in order, acknowledge)
and subclasses :class:`InboxTransport`; this package makes connections on top that keep
order, flow control and close like TCP, drop duplicates, acknowledge a record only once
the node is done with it, and resume a listener's connections after it was killed.
The records on the medium are described in docs/transports.md.

    class RedisTransport(InboxTransport):
        schemes = ("redis",)
        default_port = 6379
        address_example = "redis://HOST:PORT/DB"

        def make_medium(self, address: MediumAddress) -> Medium:
            return RedisMedium(address)

:class:`JournalFile` is how this package keeps state across a kill (an append-only file of
lines, rewritten compactly now and then); a medium with state of its own may use it too.
"""

from .._errors import (
    ForeignRecord,
    InboxFull,
    MediumError,
    MediumRefused,
    MediumUnavailable,
    UnknownInbox,
)
from ._connection import COPIES_HELD, InboxConnection
from ._journalfile import JournalFile
from ._letters import Letter, LetterHandler
from ._medium import Deliver, Medium, Retention, stop_if_cancelled
from ._options import InboxOptions, backoff
from ._record import OVERHEAD, is_credit, valid_inbox
from ._transport import InboxListener, InboxTransport, MediumAddress

__all__ = [
    "COPIES_HELD",
    "OVERHEAD",
    "Deliver",
    "ForeignRecord",
    "InboxConnection",
    "InboxFull",
    "InboxListener",
    "InboxOptions",
    "InboxTransport",
    "JournalFile",
    "Letter",
    "LetterHandler",
    "Medium",
    "MediumAddress",
    "MediumError",
    "MediumRefused",
    "MediumUnavailable",
    "Retention",
    "UnknownInbox",
    "backoff",
    "is_credit",
    "stop_if_cancelled",
    "valid_inbox",
]
