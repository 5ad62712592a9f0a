"""The node runtime: identity, the wire format, connections, mailboxes, messaging.

``Node`` is what ``p2phost run`` starts; apps see it as their ``Messenger``. The wire
format is specified in docs/wire.md.
"""

from p2phost_sdk import Backoff

from ._errors import ListenError, NodeAlreadyRunning, NodeConfigError, NodeNotRunning, WireError
from .messaging._apps import check_topic
from .messaging._mailbox import Mailbox
from .node._control import ControlServer, query_control
from .node._node import INSECURE_WARNING, Node
from .node._options import NodeOptions
from .wire._envelope import VERSION, Envelope, Kind, decode, encode
from .wire._handshake import Hello, choose_codec

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
    "check_topic",
    "choose_codec",
    "decode",
    "encode",
    "query_control",
]
