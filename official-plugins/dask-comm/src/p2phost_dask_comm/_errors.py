"""Errors of the Dask comm backend. Dask retries a connect on ``OSError``, so every
error a connect can meet is one; a broken comm is Dask's own ``CommClosedError``.

The tree::

    OSError
    └── DaskCommError          every error the backend raises on purpose
        ├── NoProject          no p2phost project to open the process's node from
        ├── BadAddress         (also a ValueError) not p2phost://PEERID[/NAME]
        ├── PeerNotReached     discovery has not connected the peer (yet)
        └── NoListener         the peer runs no Dask listener of that name
"""

from __future__ import annotations


class DaskCommError(OSError):
    """Base of the errors the p2phost Dask backend raises; ``fix`` says what to run."""

    def __init__(self, message: str, *, fix: str = "") -> None:
        self.fix = fix
        super().__init__(f"{message} (fix: {fix})" if fix else message)


class NoProject(DaskCommError):
    """No p2phost project to open this process's node from."""


class BadAddress(DaskCommError, ValueError):
    """An address that is not ``p2phost://PEERID`` or ``p2phost://PEERID/NAME``."""


class PeerNotReached(DaskCommError):
    """The node has no connection to the peer: discovery has not found it (yet)."""


class NoListener(DaskCommError):
    """The peer's node runs no Dask listener of that name."""
