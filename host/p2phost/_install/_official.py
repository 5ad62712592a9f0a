"""Trust for official plugins: what the built-in source vouches for.

A built-in wheel's signature (already checked when the built-in source read it) and,
for an official plugin fetched from a registry, the release key as its implicit pin.
"""

from __future__ import annotations

from .._errors import UserError
from .._lock import LockedFile
from ._builtin import BUILTIN_SOURCE
from ._http import Fetcher
from ._registry import RegistryClient, Release, RemoteFile
from ._signing import Signed, verify_download


def builtin_signature(client: RegistryClient, fetcher: Fetcher, item: Release,
                      wheel: RemoteFile) -> Signed | None:
    """A built-in wheel's signature: checked against the release key (and the file's
    sha256) when the built-in source read it, so neither fetched nor verified again."""
    source = client.builtin
    checked = source.checked(wheel.filename) if source is not None else None
    if checked is None:  # not this p2phost's own: verified like any download
        return verify_download(item, wheel, fetcher)
    return Signed(checked.signature.publisher_key, checked.signature.signature)


def official_pin(client: RegistryClient, item: Release) -> LockedFile | None:
    """For an official plugin (one the built-in source has), the release key as its pin.

    So a registry's tcp-transport must be signed by the key that signed p2phost's own,
    as if the lock had pinned it, unless the user accepts another with --trust-new-key.
    """
    builtin = client.builtin
    try:
        official = builtin.plugin(item.name) if builtin is not None else None
    except UserError:
        return None
    if official is None or item.source == BUILTIN_SOURCE:
        return None
    newest = official.releases[0]
    return LockedFile(name=item.name, version=f"{newest.version}, built into p2phost",
                      source=BUILTIN_SOURCE, filename="", sha256="",
                      publisher_key=builtin.release_key if builtin else None)
