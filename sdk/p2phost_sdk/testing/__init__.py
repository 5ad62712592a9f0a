"""Conformance kits for plugin authors, one per kind, as one pytest plugin; test helpers.

Enable every kit in a plugin's tests with one line in ``tests/conftest.py``::

    pytest_plugins = ["p2phost_sdk.testing"]

then subclass the kit of your plugin's kind (each module's docstring shows how):

=========== ======================================================= =====================
kind        kit                                                     fixture you provide
=========== ======================================================= =====================
transport   ``p2phost_sdk.testing.transport.TransportConformance``  ``transport_case``
codec       ``p2phost_sdk.testing.codec.CodecConformance``          ``codec``
discovery   ``p2phost_sdk.testing.discovery.DiscoveryConformance``  ``discovery_factory``
security    ``p2phost_sdk.testing.security.SecurityConformance``    ``security_factory``
app         ``p2phost_sdk.testing.app.AppConformance``              ``app_factory``
=========== ======================================================= =====================

:data:`KITS` maps each kind to its kit, and :class:`PluginUnderTest` loads a plugin
project and feeds the objects its hooks make to them (``p2phost plugin check`` uses both).
:func:`memory_pipe` gives two connected in-memory connections for unit tests, and the
``app_network`` fixture an in-memory network of N real nodes.
"""

from ._kits import KITS, Kit
from ._memory import PipeConnection, memory_pipe
from ._network import MemoryNetwork
from ._plugin import PluginUnderTest

# The fixtures of every kit module become available to tests that enable this plugin.
pytest_plugins = [kit.module for kit in KITS.values() if kit.available()]

__all__ = ["KITS", "Kit", "MemoryNetwork", "PipeConnection", "PluginUnderTest", "memory_pipe"]
