"""Conformance kits for plugin authors, one per kind (a pytest plugin), and test helpers.

Enable a kit in a plugin's tests with ``pytest_plugins = ["p2phost_sdk.testing.KIND"]``.
:func:`memory_pipe` gives two connected in-memory connections for unit tests.
"""

from ._memory import PipeConnection, memory_pipe

__all__ = ["PipeConnection", "memory_pipe"]
