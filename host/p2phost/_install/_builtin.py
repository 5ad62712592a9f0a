"""The built-in source: the official plugins' wheels that ship inside p2phost, signed.

``scripts/dist`` puts each official plugin's wheel, its signature (``WHEEL.sig``, made with
the project's release key) and ``release-key.pub`` into ``p2phost/_builtin``. The host trusts
that key: a built-in wheel is offered only when its sha256 is the one the release key signed,
so a wheel changed after the build is refused, never installed.

It is the last plugin source, after every registry (``--registry``, ``P2PHOST_REGISTRY``,
``[registry]``), so a fresh install works offline with no server, and a registry with a newer
version wins. A development checkout (an editable install) has no ``p2phost/_builtin``; there
``P2PHOST_BUILTIN_DIR`` names the folder (``scripts/dist`` writes ``dist/plugins``).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from p2phost_sdk import PluginMetadata, PluginMetadataError, normalize_name
from p2phost_sdk.signing import PluginSignature, SignatureFormatError, parse_publisher_key

from ._errors import IntegrityError
from ._registry import PluginInfo, Release, RemoteFile
from ._signing import signature_verifies
from ._wheels import HOST_DISTRIBUTIONS

#: How the lock and ``plugin info`` name this source.
BUILTIN_SOURCE = "built-in"
#: Names the built-in source's folder (a development checkout has none inside p2phost).
BUILTIN_ENV = "P2PHOST_BUILTIN_DIR"
#: Who publishes the built-in plugins.
OFFICIAL_OWNER = "p2phost"
_REINSTALL = "reinstall p2phost: pip install --force-reinstall p2phost"


def builtin_dir() -> Path | None:
    """``$P2PHOST_BUILTIN_DIR``, else ``p2phost/_builtin`` when this p2phost has one."""
    explicit = os.environ.get(BUILTIN_ENV)
    if explicit:
        return Path(explicit).expanduser()
    inside = Path(__file__).resolve().parent.parent / "_builtin"
    return inside if inside.is_dir() else None


@dataclass(frozen=True)
class BuiltinWheel:
    """One wheel of the built-in source, checked against its signature."""

    path: Path
    signature: PluginSignature
    metadata: PluginMetadata


@dataclass
class BuiltinSource:
    """The plugins in one built-in folder, by plugin name (read once, lazily)."""

    root: Path
    #: Wheels refused (changed after signing, unreadable, unsigned), by distribution name.
    refused: dict[str, str] = field(default_factory=dict)
    #: Each wheel checked so far: the wheel, or None when refused.
    _memo: dict[Path, BuiltinWheel | None] = field(default_factory=dict, repr=False)

    @classmethod
    def find(cls) -> BuiltinSource | None:
        """The built-in source of this p2phost, if it has one."""
        root = builtin_dir()
        return cls(root) if root is not None and root.is_dir() else None

    @cached_property
    def release_key(self) -> str:
        """The ``ed25519:...`` key the built-in wheels must be signed with."""
        path = self.root / "release-key.pub"
        try:
            key = path.read_text(encoding="utf-8").strip()
            parse_publisher_key(key)
        except (OSError, UnicodeDecodeError, SignatureFormatError) as exc:
            raise IntegrityError(f"the built-in source {self.root} has no valid release key "
                                 f"({path.name}: {exc}); nothing was installed",
                                 fix=_REINSTALL) from exc
        return key

    @cached_property
    def _paths(self) -> dict[str, list[Path]]:
        """Every built-in wheel file, by its distribution's normalised name (not checked)."""
        found: dict[str, list[Path]] = {}
        for path in sorted(self.root.glob("*.whl")):
            found.setdefault(normalize_name(path.name.split("-", 1)[0]), []).append(path)
        return found

    @cached_property
    def wheels(self) -> dict[str, list[BuiltinWheel]]:
        """Every intact built-in wheel, by plugin name (all checked: for search)."""
        found: dict[str, list[BuiltinWheel]] = {}
        for dist in self._paths:
            for checked in self._checked(dist):
                found.setdefault(checked.metadata.name, []).append(checked)
        return found

    def _checked(self, dist: str) -> list[BuiltinWheel]:
        """The intact wheels of distribution ``dist``, each checked once."""
        out = []
        for path in self._paths.get(dist, ()):
            if path not in self._memo:
                self._memo[path] = self._check(path)
            if (checked := self._memo[path]) is not None:
                out.append(checked)
        return out

    def _of_plugin(self, norm: str) -> list[BuiltinWheel]:
        """The intact wheels of plugin ``norm``: only its own distribution's are checked
        (``p2phost-NAME`` or ``NAME``, as ``scripts/dist`` names them), or, for a plugin
        not found so, all of them."""
        if "wheels" not in self.__dict__:
            own = [w for dist in (f"p2phost-{norm}", norm) for w in self._checked(dist)
                   if w.metadata.name == norm]
            if own:
                return own
        return self.wheels.get(norm, [])

    def checked(self, filename: str) -> BuiltinWheel | None:
        """The built-in wheel called ``filename``, checked, if this source has it intact."""
        dist = normalize_name(filename.split("-", 1)[0])
        return next((w for w in self._checked(dist) if w.path.name == filename), None)

    def _check(self, path: Path) -> BuiltinWheel | None:
        dist = normalize_name(path.name.split("-", 1)[0])
        if dist in HOST_DISTRIBUTIONS:
            return None  # the SDK, bundled for `registry seed`: never a plugin
        problem = ""
        signature = None
        try:
            signature = PluginSignature.parse(path.with_name(path.name + ".sig").read_bytes())
        except (OSError, SignatureFormatError) as exc:
            problem = f"its signature cannot be read ({exc})"
        if signature is None:
            problem = problem or "it has no p2phost signature"
        elif signature.publisher_key != self.release_key or not signature_verifies(signature) \
                or signature.filename != path.name:
            problem = "its signature is not the release key's"
        else:
            with path.open("rb") as handle:
                digest = hashlib.file_digest(handle, "sha256").hexdigest()
            if digest != signature.sha256:
                problem = (f"it was changed after it was signed (sha256 {digest}, signed "
                           f"{signature.sha256})")
        if not problem and signature is not None:
            try:
                return BuiltinWheel(path, signature, PluginMetadata.from_wheel(path))
            except PluginMetadataError as exc:
                problem = f"its plugin metadata is unreadable ({exc})"
        self.refused[dist] = f"{path.name}: {problem}"
        return None

    def refusal(self, name: str) -> str | None:
        """Why the built-in wheel of plugin ``name`` was refused, if it was."""
        norm = normalize_name(name)
        return self.refused.get(f"p2phost-{norm}") or self.refused.get(norm)

    def plugin(self, name: str) -> PluginInfo | None:
        """Every built-in release of ``name``; raises IntegrityError for a refused wheel."""
        norm = normalize_name(name)
        wheels = self._of_plugin(norm)
        if not wheels:
            why = self.refusal(norm)
            if why is not None:
                raise IntegrityError(f"the built-in wheel of {norm} is refused: {why}; "
                                     "nothing was installed", fix=_REINSTALL)
            return None
        releases = sorted((self._release(w) for w in wheels), key=lambda r: r.version,
                          reverse=True)
        return PluginInfo(name=norm, source=BUILTIN_SOURCE, summary=wheels[0].metadata.summary,
                          owners=(OFFICIAL_OWNER,), releases=tuple(releases))

    def _release(self, wheel: BuiltinWheel) -> Release:
        meta = wheel.metadata
        try:
            version = Version(meta.version)
        except InvalidVersion as exc:  # validated by PluginMetadata already
            raise IntegrityError(f"{wheel.path.name}: bad version", fix=_REINSTALL) from exc
        sig = wheel.path.with_name(wheel.path.name + ".sig")
        remote = RemoteFile(filename=wheel.path.name, url=wheel.path.as_uri(),
                            sha256=wheel.signature.sha256, size=wheel.path.stat().st_size,
                            signature_url=sig.as_uri(), publisher_key=self.release_key)
        return Release(name=meta.name, version=version, source=BUILTIN_SOURCE,
                       kinds=meta.kinds, host_api=meta.host_api, requires=dict(meta.requires),
                       capabilities=meta.capabilities, provides=dict(meta.provides),
                       files=(remote,))

    def file(self, filename: str) -> Path | None:
        """The built-in wheel called ``filename``, if this source has it intact."""
        checked = self.checked(filename)
        return checked.path if checked is not None else None

    def search(self, query: str, kind: str | None) -> list[dict[str, Any]]:
        """Search rows (as a registry's) of the built-in plugins matching ``query``."""
        rows = []
        words = query.lower().split()
        for name in sorted(self.wheels):
            info = self.plugin(name)
            newest = info.newest_fitting() if info else None
            if info is None or newest is None or (kind and kind not in newest.kinds):
                continue
            text = f"{name} {info.summary}".lower()
            if all(w in text for w in words):
                rows.append({"name": name, "latest": str(newest.version), "summary": info.summary,
                             "kinds": list(newest.kinds), "source": BUILTIN_SOURCE})
        return rows
