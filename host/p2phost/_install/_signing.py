"""Publisher signatures at install: verify each new file, pin its key, hold later versions to it.

The lock pins the publisher key of each plugin the first time a signed version is installed
(trust on first use). A later version signed by another key, or no longer signed, is refused
the way ssh refuses a changed host key, until the user accepts it with ``--trust-new-key``.
Every signature is also kept in the lock, so ``plugin sync`` checks the files it installs
against the pinned keys without asking the registry.
"""

from __future__ import annotations

import base64
import binascii
import functools
import os
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from p2phost_sdk.signing import (
    MAX_SIGNATURE_SIZE,
    PluginSignature,
    SignatureFormatError,
    signed_message,
    verify_with_key,
)

from .._errors import UserError
from .._lock import Lock, LockedFile
from ._errors import IntegrityError
from ._http import Fetcher, NotFound
from ._registry import Release, RemoteFile


class SignatureRefused(IntegrityError):
    """A file's signature is missing, malformed, made by an unknown key, or does not verify."""


class PublisherKeyChanged(UserError):
    """A new version is signed by another key than the one the lock pins (or not at all)."""


class UnsignedRefused(UserError):
    """An unsigned plugin under ``--require-signed``."""


@dataclass(frozen=True)
class SigningPolicy:
    """How strict an install is about signatures."""

    #: Refuse plugins without a p2phost signature (also ``[registry] require-signed``).
    require_signed: bool = False
    #: Accept a publisher key that differs from the pinned one (and pin the new key).
    trust_new_key: bool = False
    #: The command the user ran, shown with ``--trust-new-key`` as the way to accept a change.
    command: str = "p2phost plugin install"


@dataclass(frozen=True)
class Signed:
    """A verified signature: the key and the raw signature in base64, as the lock keeps them."""

    publisher_key: str
    signature: str


def verify_download(release: Release, wheel: RemoteFile, fetcher: Fetcher,
                    kept: Path | None = None) -> Signed | None:
    """The verified signature of a downloaded ``wheel`` (whose sha256 already matched).

    None when the registry reports no p2phost signature for it. ``kept``: where the
    signature is kept once fetched (beside the wheel in the download cache); a kept one
    is verified like a fetched one, and fetched again if it does not verify.
    """
    label = f"{release.name} {release.version} ({wheel.filename})"
    if wheel.publisher_key is None:
        return None
    if not wheel.signature_url:
        raise SignatureRefused(f"{release.source} says {label} is signed by "
                               f"{wheel.publisher_key} but serves no signature; nothing was "
                               "installed", fix="tell the registry's operator")
    url = urllib.parse.urljoin(release.source + "/", wheel.signature_url)
    if kept is not None and kept.is_file():
        try:
            with open(kept, "rb") as handle:
                return _verified(label, url, wheel, handle.read(MAX_SIGNATURE_SIZE + 1))
        except (OSError, SignatureRefused):
            kept.unlink(missing_ok=True)  # damaged: the registry's copy decides
    try:
        with fetcher.open(url) as body:
            data = body.read(MAX_SIGNATURE_SIZE + 1)
    except NotFound:
        raise SignatureRefused(f"{release.source} says {label} is signed but has no signature "
                               f"at {url}; nothing was installed",
                               fix="tell the registry's operator") from None
    signed = _verified(label, url, wheel, data)
    if kept is not None:
        part = kept.with_name(f"{kept.name}.{os.getpid()}.part")
        try:
            part.write_bytes(data)
            os.replace(part, kept)
        except OSError:  # not kept: fetched again next time
            part.unlink(missing_ok=True)
    return signed


def _verified(label: str, url: str, wheel: RemoteFile, data: bytes) -> Signed:
    """``data``, the signature document of ``wheel`` from ``url``, checked and verified."""
    signature, problem = None, "it is not a p2phost signature"
    if len(data) > MAX_SIGNATURE_SIZE:
        problem = f"it is larger than {MAX_SIGNATURE_SIZE} bytes"
    else:
        try:
            signature = PluginSignature.parse(data)
        except SignatureFormatError as exc:
            problem = str(exc)
    if signature is None:
        raise SignatureRefused(f"the signature of {label} from {url} is malformed: {problem}; "
                               "nothing was installed", fix="tell the plugin's publisher")
    if signature.publisher_key != wheel.publisher_key:
        raise SignatureRefused(
            f"{label} is signed by an unknown key {signature.publisher_key}, not by its "
            f"publisher's key {wheel.publisher_key}; nothing was installed",
            fix="do not install it; tell the registry's operator and the publisher")
    if (signature.filename, signature.sha256) != (wheel.filename, wheel.sha256):
        raise SignatureRefused(
            f"{label} is not what its publisher signed: the signature is for "
            f"{signature.filename} with sha256 {signature.sha256}, the file has sha256 "
            f"{wheel.sha256}; it was changed after signing (at the registry or on the way). "
            "Nothing was installed", fix="do not install it; tell the registry's operator "
                                         "and the publisher")
    if not signature_verifies(signature):
        raise SignatureRefused(f"the signature of {label} does not verify with "
                               f"{signature.publisher_key}; nothing was installed",
                               fix="do not install it; tell the registry's operator")
    return Signed(signature.publisher_key, signature.signature)


def check_pin(release: Release, signed: Signed | None, pinned: LockedFile | None,
              policy: SigningPolicy) -> None:
    """Hold a new version of a plugin to the publisher key the lock pins for it."""
    if pinned is None or pinned.publisher_key is None or policy.trust_new_key:
        return
    new = signed.publisher_key if signed else None
    if new == pinned.publisher_key:
        return
    now = f"is signed by {new}" if new else "is not signed at all"
    if pinned.filename == "":  # an official plugin: held to the release key p2phost ships
        raise PublisherKeyChanged(
            f"{release.name} is an official p2phost plugin, signed by the release key "
            f"{pinned.publisher_key} built into p2phost, but {release.name} {release.version} "
            f"from {release.source} {now}. It may be an impostor; nothing was installed",
            fix="ask the registry's operator to publish the signed official plugins "
                f"(p2phost registry seed); to accept this one anyway: {policy.command} "
                "--trust-new-key")
    raise PublisherKeyChanged(
        f"THE PUBLISHER KEY OF {release.name} HAS CHANGED: {release.name} {release.version} "
        f"{now}, but p2phost.lock pins {pinned.publisher_key} (from {release.name} "
        f"{pinned.version}). Someone may have taken over the plugin or the registry, or the "
        "publisher replaced the key. Nothing was installed",
        fix=f"check the new key with the publisher (not through the registry); to accept "
            f"it: {policy.command} --trust-new-key")


def check_lock(lock: Lock, policy: SigningPolicy, warn: Callable[[str], None],
               new: frozenset[str] = frozenset()) -> None:
    """Verify every locked plugin's signature; refuse or warn about unsigned ones.

    ``new`` names the plugins this operation adds or changes: only those are warned about.
    """
    unsigned = []
    for entry in lock.plugins:
        if entry.publisher_key is None and entry.signature is None:
            unsigned.append(entry)
            continue
        if not lock_signature_ok(entry):
            raise SignatureRefused(
                f"p2phost.lock: the signature of {entry.name} {entry.version} "
                f"({entry.filename}) does not verify with its pinned key "
                f"{entry.publisher_key}; nothing was installed",
                fix="restore p2phost.lock from version control, or run "
                    f"`p2phost plugin install {entry.name} --yes` (fetches it again and "
                    "locks the file it verifies)")
    if unsigned and policy.require_signed:
        names = ", ".join(f"{e.name} {e.version}" for e in unsigned)
        raise UnsignedRefused(
            f"{names}: not signed by a publisher key, and signatures are required "
            "(--require-signed or [registry] require-signed); nothing was installed",
            fix="ask the publisher to publish with --sign; or drop --require-signed (and "
                "require-signed from [registry] in p2phost.toml) to allow unsigned plugins")
    fresh = [f"{e.name} {e.version}" for e in unsigned if e.name in new]
    if len(fresh) == 1:  # one warning per operation, however many plugins it adds
        warn(f"warning: {fresh[0]} is not signed by its publisher: nothing proves it is what "
             "they published (refuse unsigned plugins with --require-signed)")
    elif fresh:
        warn(f"warning: {', '.join(fresh)} are not signed by their publishers: nothing proves "
             "they are what was published (refuse unsigned plugins with --require-signed)")


def lock_signature_ok(entry: LockedFile) -> bool:
    """Whether ``entry``'s signature verifies with the publisher key it pins."""
    if entry.publisher_key is None or entry.signature is None:
        return False
    return _verifies(entry.publisher_key, entry.signature, entry.filename, entry.sha256)


def signature_verifies(signature: PluginSignature) -> bool:
    """``signature.verifies()``, remembered like :func:`lock_signature_ok`."""
    return _verifies(signature.publisher_key, signature.signature, signature.filename,
                     signature.sha256)


# One install meets each signature two or three times (the built-in source's check or the
# download's, the current lock's doubts, the new lock's check); the answer depends on these
# four strings only, so the Ed25519 verification runs once per signature and process.
@functools.lru_cache(maxsize=1024)
def _verifies(publisher_key: str, signature: str, filename: str, sha256: str) -> bool:
    try:
        raw = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        return False
    return verify_with_key(publisher_key, raw, signed_message(filename, sha256))
