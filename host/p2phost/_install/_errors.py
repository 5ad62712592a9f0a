"""The installer's errors: each names what failed, where, and the command that fixes it."""

from __future__ import annotations

from .._errors import UserError


class RegistryError(UserError):
    """A registry could not be reached, or answered something unusable."""


class Unreachable(RegistryError):
    """A registry did not answer at all (down, refused, timed out), or only that it is
    unavailable (429 or 5xx to every try: down behind its proxy)."""


class UnknownPlugin(UserError):
    """No configured registry knows a plugin of this name."""


class ResolutionError(UserError):
    """No set of plugin versions satisfies every requirement and this host."""


class IntegrityError(UserError):
    """A downloaded file does not have the hash its source published."""


class InstallError(UserError):
    """The plugin environment could not be written (disk full, permissions...)."""
