"""The host API version and the rule that says which plugins a host can load."""

from __future__ import annotations

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

#: The version of the interface between the host and its plugins (PEP 440).
#: Minor versions only add to the API; a major version may remove or change.
HOST_API = Version("1.1")


def host_api_compatible(specifier: str, host_api: Version = HOST_API) -> bool:
    """Whether a plugin declaring ``host-api = specifier`` can run on ``host_api``.

    The rule: the host's API version must satisfy the plugin's PEP 440 specifier.
    Plugins should declare a range such as ``">=1.0,<2"``. An invalid specifier is
    never compatible.
    """
    try:
        spec = SpecifierSet(specifier)
    except InvalidSpecifier:
        return False
    return spec.contains(host_api, prereleases=True)
