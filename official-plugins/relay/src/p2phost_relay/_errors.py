"""The relay's errors, mapped onto the SDK's so the host reports them as it does any
transport's::

    TransportError (p2phost_sdk)
     └── RelayError             a relay address is bad, or the relay cannot be used
          ├── RelayAddressError (also AddressError) a relay address is malformed
          └── RelayRefused      the relay said no: no reservation, a limit, not a relay
"""

from __future__ import annotations

from p2phost_sdk import AddressError, TransportError


class RelayError(TransportError):
    """A relay address is malformed, or the relay cannot be reached or used."""


class RelayRefused(RelayError):
    """The relay refused a reservation or a circuit; the message starts with the reason."""


class RelayAddressError(RelayError, AddressError):
    """A relay address is malformed: the host reports it as a usage error (exit 2)."""
