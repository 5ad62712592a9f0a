"""The node runtime: identity, the wire format, connections, mailboxes, messaging.

``Node`` is what ``p2phost run`` starts; apps see it as their ``Messenger``. The wire
format is specified in docs/wire.md.
"""

from p2phost_sdk import Backoff

from ._control import ControlServer, query_control
from ._envelope import VERSION, Envelope, Kind, decode, encode
from ._errors import ListenError, NodeAlreadyRunning, NodeConfigError, NodeNotRunning, WireError
from ._handshake import Hello, choose_codec
from ._mailbox import Mailbox
from ._node import INSECURE_WARNING, Node, NodeOptions

__all__ = [
    "INSECURE_WARNING",
    "VERSION",
    "Backoff",
    "ControlServer",
    "Envelope",
    "Hello",
    "Kind",
    "ListenError",
    "Mailbox",
    "Node",
    "NodeAlreadyRunning",
    "NodeConfigError",
    "NodeNotRunning",
    "NodeOptions",
    "WireError",
    "choose_codec",
    "decode",
    "encode",
    "query_control",
]
