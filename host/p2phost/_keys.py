"""Publisher key files: the Ed25519 key a publisher signs plugin files with.

The file holds the private seed in hex (like the node identity) under a comment naming the
public key, and is created owner-only. Loading refuses a file others may read, the way ssh
refuses an unprotected private key: whoever holds it can publish as you.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from p2phost_sdk import Identity
from p2phost_sdk.signing import PluginSignature, format_publisher_key

from ._errors import UserError

#: Overrides the default publisher key path for every command.
KEY_ENV = "P2PHOST_PUBLISHER_KEY"
_HEADER = "# p2phost publisher key (Ed25519). Keep it secret: it signs what you publish.\n"


class KeyFileError(UserError):
    """A publisher key file is missing, unreadable, malformed or unprotected."""


def default_key_path() -> Path:
    """``$P2PHOST_PUBLISHER_KEY``, else ``$XDG_CONFIG_HOME/p2phost/publisher.key``."""
    if explicit := os.environ.get(KEY_ENV):
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "p2phost" / "publisher.key"


def public_key_of(identity: Identity) -> str:
    """The ``ed25519:BASE64`` form of a key's public half."""
    return format_publisher_key(identity.public_key)


def create_key(path: Path, *, force: bool = False) -> Identity:
    """Write a new key to ``path`` (mode 0600); refuses to replace one unless ``force``."""
    identity = Identity.generate()
    text = f"{_HEADER}# public: {public_key_of(identity)}\n{identity.seed.hex()}\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(text)
        if force:
            os.replace(tmp, path)
        else:
            try:
                # link() fails if the name exists: never overwrite a key by accident.
                os.link(tmp, path)
            finally:
                tmp.unlink()
    except FileExistsError:
        raise KeyFileError(
            f"{path} already exists; replacing it would change the key your users pinned",
            fix=f"keep it (p2phost key show --key {path}), write elsewhere with --out PATH, "
                "or replace it with --force") from None
    except OSError as exc:
        raise KeyFileError(f"cannot write {path}: {exc.strerror or exc}",
                           fix="choose a writable place with --out PATH") from exc
    return identity


def load_key(path: Path) -> Identity:
    """The key in ``path``; refused if missing, malformed, or readable by others."""
    try:
        mode = path.stat().st_mode
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise KeyFileError(f"no publisher key at {path}",
                           fix=f"p2phost key new --out {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"cannot read the publisher key {path}: {exc}",
                           fix="check the path and its permissions") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"the publisher key {path} is accessible by others "
                           f"(mode {stat.S_IMODE(mode):o}); it is ignored",
                           fix=f"chmod 600 {path}")
    body = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    try:
        (seed_hex,) = body
        return Identity.from_seed(bytes.fromhex(seed_hex))
    except ValueError:
        raise KeyFileError(f"{path} is not a p2phost publisher key (one line of 64 hex digits "
                           "expected)", fix="p2phost key new --out NEW_PATH") from None


def sign_file(identity: Identity, path: Path) -> PluginSignature:
    """The signature document of one distribution file."""
    with path.open("rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    return PluginSignature.create(identity, path.name, digest)
