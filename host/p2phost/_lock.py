"""``p2phost.lock``: the exact files installed, so any machine can reproduce them."""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import tomlkit

from p2phost_sdk import normalize_name

from ._errors import ManifestError
from ._toml_lines import decode_error_line

LOCK_NAME = "p2phost.lock"
LOCK_VERSION = 1
_HEADER = "# Written by p2phost; do not edit. `p2phost plugin sync` installs exactly this.\n"


@dataclass(frozen=True)
class LockedFile:
    """One distribution installed in the plugin environment."""

    name: str
    version: str
    #: Where it came from: a registry URL, or a package index URL for Python dependencies.
    source: str
    filename: str
    sha256: str
    #: For plugins: the plugin names it requires; for packages: empty.
    requires: tuple[str, ...] = ()
    signature: str | None = None
    publisher_key: str | None = None


@dataclass(frozen=True)
class Lock:
    """The contents of ``p2phost.lock``: plugins and the Python packages they need."""

    plugins: tuple[LockedFile, ...] = ()
    packages: tuple[LockedFile, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def plugin(self, name: str) -> LockedFile | None:
        """The locked plugin called ``name``, if any."""
        norm = normalize_name(name)
        return next((p for p in self.plugins if p.name == norm), None)

    @classmethod
    def load(cls, path: Path) -> Lock:
        """Read a lock file; an absent file is an empty lock."""
        if not path.exists():
            return cls()
        text = path.read_text(encoding="utf-8")
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ManifestError(path, decode_error_line(exc), "", f"not valid TOML: {exc}",
                                fix=f"delete {path.name} and run `p2phost plugin install`") from exc
        if data.get("version") != LOCK_VERSION:
            raise ManifestError(path, 1, "version", f"unsupported lock version "
                                f"{data.get('version')!r} (this p2phost writes {LOCK_VERSION})",
                                fix=f"delete {path.name} and run `p2phost plugin install`")
        return cls(
            plugins=tuple(_entries(path, data, "plugin")),
            packages=tuple(_entries(path, data, "package")),
        )

    def dumps(self) -> str:
        """The lock as TOML text; stable for the same contents (sorted by name)."""
        doc = tomlkit.document()
        doc.add(tomlkit.comment(_HEADER.strip("# \n")))
        doc["version"] = LOCK_VERSION
        for key, entries in (("plugin", self.plugins), ("package", self.packages)):
            array = tomlkit.aot()
            for entry in sorted(entries, key=lambda e: e.name):
                row = {k: v for k, v in asdict(entry).items() if v not in (None, ())}
                if "requires" in row:
                    row["requires"] = list(row["requires"])
                array.append(tomlkit.item(row))
            if entries:
                doc[key] = array
        return tomlkit.dumps(doc)

    def save(self, path: Path) -> None:
        """Write atomically."""
        tmp = path.with_suffix(".lock.tmp")
        tmp.write_text(self.dumps(), encoding="utf-8")
        tmp.replace(path)


def _entries(path: Path, data: dict[str, Any], key: str) -> list[LockedFile]:
    out = []
    for index, row in enumerate(data.get(key, [])):
        try:
            out.append(LockedFile(
                name=normalize_name(str(row["name"])),
                version=str(row["version"]),
                source=str(row["source"]),
                filename=str(row["filename"]),
                sha256=str(row["sha256"]),
                requires=tuple(row.get("requires", ())),
                signature=row.get("signature"),
                publisher_key=row.get("publisher_key"),
            ))
        except (KeyError, TypeError) as exc:
            raise ManifestError(path, None, f"{key}[{index}]", f"malformed entry ({exc})",
                                fix=f"delete {path.name} and run `p2phost plugin install`") from exc
    return out
