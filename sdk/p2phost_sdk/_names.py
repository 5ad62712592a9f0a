"""The names that tie plugins to the host, in a module that imports nothing.

:mod:`._metadata` (which the installer uses) and :mod:`._hooks` (which loads pluggy and every
plugin kind) both need them.
"""

#: The pluggy project name of the host's hooks: ``pluggy.PluginManager(PLUGGY_PROJECT_NAME)``
#: with ``add_hookspecs(HookSpecs)`` calls a plugin's hooks as the host does (its
#: :data:`hookimpl` marker carries the same name).
PLUGGY_PROJECT_NAME = "p2phost"
#: The entry point group plugins register under.
ENTRY_POINT_GROUP = "p2phost.plugins"
