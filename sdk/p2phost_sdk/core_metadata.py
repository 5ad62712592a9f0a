"""Reading a distribution's core metadata (a wheel's ``METADATA``): for host-side tools.

The SDK reads a wheel's name and version with it (:meth:`PluginMetadata.from_wheel`), and the
host's installer the ``Requires-Dist`` of the wheels it resolves: one reader, so the two
cannot disagree on a header. Plugins have no use for it.
"""

from ._metadata import header_values

__all__ = ["header_values"]
