"""``p2phost.lock``: the exact files installed, so any machine can reproduce them."""

from __future__ import annotations

import re
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from p2phost_sdk import is_valid_name, normalize_name

from ._errors import ManifestError
from ._fileops import replace_file

LOCK_NAME = "p2phost.lock"
LOCK_VERSION = 1
_HEADER = "# Written by p2phost; do not edit. `p2phost plugin sync` installs exactly this.\n"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_URL_SCHEMES = ("http://", "https://", "file://")
_FIX = "restore it from version control, or delete it and run `p2phost plugin install`"


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
    #: The exact URL the file was downloaded from (``plugin sync`` fetches it again).
    url: str | None = None
    #: For plugins: their own Python requirements (PEP 508), installed as packages.
    dependencies: tuple[str, ...] = ()


@dataclass(frozen=True)
class Lock:
    """The contents of ``p2phost.lock``: plugins and the Python packages they need."""

    plugins: tuple[LockedFile, ...] = ()
    packages: tuple[LockedFile, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # One order for the same contents, whoever built the lock (the resolver's order,
        # the file's), so that "nothing changed" compares equal and installs nothing.
        for key in ("plugins", "packages"):
            object.__setattr__(self, key, tuple(sorted(getattr(self, key),
                                                       key=lambda e: e.name)))

    def plugin(self, name: str) -> LockedFile | None:
        """The locked plugin called ``name``, if any."""
        norm = normalize_name(name)
        return next((p for p in self.plugins if p.name == norm), None)

    @property
    def files(self) -> tuple[LockedFile, ...]:
        """Every locked file: plugins, then packages."""
        return self.plugins + self.packages

    @classmethod
    def load(cls, path: Path) -> Lock:
        """Read and check a lock file; an absent file is an empty lock."""
        if not path.exists():
            return cls()
        text = path.read_text(encoding="utf-8")
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ManifestError(path, getattr(exc, "lineno", None), "", f"not valid TOML: {exc}",
                                fix=_FIX) from exc
        if data.get("version") != LOCK_VERSION:
            raise ManifestError(path, 1, "version", f"unsupported lock version "
                                f"{data.get('version')!r} (this p2phost writes {LOCK_VERSION})",
                                fix=_FIX)
        return cls(
            plugins=tuple(_entries(path, text, data, "plugin")),
            packages=tuple(_entries(path, text, data, "package")),
        )

    def dumps(self) -> str:
        """The lock as TOML text; stable for the same contents (sorted by name).

        Written by hand (strings and lists of strings only), byte for byte as tomlkit
        writes it (tests/install/test_lock_travels.py compares), without importing tomlkit.
        """
        out = [_HEADER, f"version = {LOCK_VERSION}\n"]
        for key, entries in (("plugin", self.plugins), ("package", self.packages)):
            for entry in sorted(entries, key=lambda e: e.name):
                out.append(f"\n[[{key}]]\n")
                for name, value in asdict(entry).items():
                    if value in (None, ()):
                        continue
                    text = ", ".join(map(_toml_string, value)) if isinstance(value, tuple) \
                        else None
                    out.append(f"{name} = [{text}]\n" if text is not None
                               else f"{name} = {_toml_string(value)}\n")
        return "".join(out)

    def save(self, path: Path) -> None:
        """Write atomically: a crash leaves the old or the new lock, never half of one."""
        replace_file(str(path), self.dumps().encode("utf-8"))


_ESCAPES = {"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r", '"': '\\"',
            "\\": "\\\\"}
_NEEDS_ESCAPE = re.compile(r'[\x00-\x1f\x7f"\\]')


def _toml_string(value: str) -> str:
    """A TOML basic string, escaped as tomlkit escapes it."""
    return '"' + _NEEDS_ESCAPE.sub(
        lambda m: _ESCAPES.get(m.group(), f"\\u{ord(m.group()):04x}"), value) + '"'


def _line_of(text: str, value: str) -> int | None:
    """The first line mentioning ``value``: good enough to point at a bad entry."""
    for number, line in enumerate(text.splitlines(), start=1):
        if value and value in line:
            return number
    return None


def _check_row(row: dict[str, Any]) -> str | None:
    """What is wrong with one entry, or None."""
    for key in ("name", "version", "source", "filename", "sha256"):
        if not isinstance(row.get(key), str):
            return f"{key}: missing or not a string"
    if not is_valid_name(row["name"]):
        return f"name: {row['name']!r} is not a valid name"
    try:
        Version(row["version"])
    except InvalidVersion:
        return f"version: {row['version']!r} is not a PEP 440 version"
    if not _SHA256.match(row["sha256"]):
        return f"sha256: {row['sha256']!r} is not 64 lowercase hex digits"
    if not row["filename"].endswith(".whl") or "/" in row["filename"]:
        return f"filename: {row['filename']!r} is not a wheel file name"
    url = row.get("url")
    if url is not None and not (isinstance(url, str) and url.startswith(_URL_SCHEMES)):
        return f"url: {url!r} is not an http(s) or file URL"
    for key in ("requires", "dependencies"):
        values = row.get(key, [])
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            return f"{key}: expected a list of strings"
    return None


def _entries(path: Path, text: str, data: dict[str, Any], key: str) -> list[LockedFile]:
    rows = data.get(key, [])
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ManifestError(path, _line_of(text, key), key, "expected [[" + key + "]] tables",
                            fix=_FIX)
    out: list[LockedFile] = []
    seen: set[str] = set()
    for index, row in enumerate(rows):
        problem = _check_row(row)
        name = normalize_name(str(row.get("name", "")))
        if problem is None and name in seen:
            problem = f"name: {name!r} is locked twice"
        if problem is not None:
            bad = problem.split(":", 1)[0]
            line = _line_of(text, str(row.get(bad, ""))) if bad in row else None
            raise ManifestError(path, line, f"{key}[{index}].{bad}",
                                "malformed entry: " + problem.split(": ", 1)[1], fix=_FIX)
        seen.add(name)
        out.append(LockedFile(
            name=name,
            version=row["version"],
            source=row["source"],
            filename=row["filename"],
            sha256=row["sha256"],
            requires=tuple(row.get("requires", ())),
            signature=row.get("signature"),
            publisher_key=row.get("publisher_key"),
            url=row.get("url"),
            dependencies=tuple(row.get("dependencies", ())),
        ))
    return out
