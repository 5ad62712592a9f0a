"""Upload validation: a file is inspected whole before anything is stored.

A wheel or sdist is accepted only when it is a well-formed archive whose name and version
agree with its file name and its own metadata, whose file name starts with the normalised
distribution name, with every member inside the archive root, no links, no member twice, a
RECORD that matches every member (wheels), an expansion bounded before it happens (see
:mod:`._archive`), and valid p2phost plugin metadata.
"""

from __future__ import annotations

import hashlib
import re
import tarfile
import tomllib
import zipfile
import zlib
from dataclasses import dataclass, field
from email.message import Message
from email.parser import HeaderParser, Parser
from pathlib import Path

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import Version

from p2phost_sdk import PluginMetadata, PluginMetadataError, normalize_name

from ._archive import scan_sdist, scan_wheel
from ._distributions import SUPPORT_DISTRIBUTIONS
from ._errors import BadRequest, PayloadTooLarge
from ._identity import dist_key_of

#: An archive may expand to at most this many times the upload limit (zip bombs).
EXPANSION_FACTOR = 10
_SCRIPT_RE = re.compile(r"<\s*script\b", re.IGNORECASE)


@dataclass(frozen=True)
class Inspected:
    """What validation learnt about an upload; the store keeps all of it."""

    filename: str
    #: The plugin's normalised name (its entry point's), which the store keys by.
    name: str
    display_name: str
    version: str
    packagetype: str
    metadata: PluginMetadata
    core_metadata: str | None
    readme: str
    readme_type: str
    requires_python: str | None
    sha256: str
    size: int
    #: One file per version and kind: ``sdist`` or the wheel's build and tags (PEP 440
    #: equal versions share it, so ``x-0.1`` beside ``x-0.1.0`` clashes).
    dist_key: str = ""
    license: str | None = None
    #: (label, URL) of the home page and Project-URLs, http(s) only.
    urls: tuple[tuple[str, str], ...] = field(default_factory=tuple)


def file_sha256(path: Path) -> str:
    """The hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_name_version(
    filename: str, what: str, headers: Message, name: str, version: Version
) -> None:
    meta_name, meta_version = headers.get("Name"), headers.get("Version")
    if not meta_name or not meta_version:
        raise BadRequest(f"{filename}: {what} has no Name or Version")
    if normalize_name(meta_name) != normalize_name(name):
        raise BadRequest(
            f"{filename}: the file name says {name!r} but {what} says Name: {meta_name}; "
            "rebuild the file instead of renaming it"
        )
    try:
        same = Version(meta_version) == version
    except ValueError:
        same = False
    if not same:
        raise BadRequest(
            f"{filename}: the file name says version {version} but {what} says "
            f"Version: {meta_version}; rebuild the file instead of renaming it"
        )


def _display_name(meta: PluginMetadata, headers: Message) -> str:
    """The plugin's name as written: its distribution's, unless that is p2phost-NAME."""
    written = str(headers["Name"])
    return meta.name if normalize_name(written) != meta.name else written


def _readme(filename: str, text: str) -> tuple[str, str, Message]:
    message = Parser().parsestr(text)
    body = message.get_payload()
    readme = body if isinstance(body, str) and body.strip() else str(message.get("Description", ""))
    if _SCRIPT_RE.search(readme):
        raise BadRequest(
            f"{filename}: the README (long description) contains a <script> element; "
            "the marketplace never runs scripts from a README: remove it and rebuild"
        )
    return readme, str(message.get("Description-Content-Type", "text/plain")), message


def _metadata_error(exc: PluginMetadataError) -> BadRequest:
    return BadRequest(
        f"{exc}; add a valid [tool.p2phost.plugin] table to pyproject.toml "
        "(see `p2phost plugin check`)"
    )


def inspect_upload(path: Path, filename: str, max_size: int) -> Inspected:
    """Validate ``path`` (uploaded as ``filename``); raise :class:`BadRequest` on any fault."""
    if "/" in filename or "\\" in filename or filename.startswith("."):
        raise BadRequest(f"{filename!r} is not a plain file name")
    size = path.stat().st_size
    if size > max_size:
        raise PayloadTooLarge(f"{filename}: {size} bytes is over the limit of {max_size} bytes")
    if filename.endswith(".whl"):
        return _inspect_wheel(path, filename, size, max_size)
    if filename.endswith(".tar.gz"):
        return _inspect_sdist(path, filename, size, max_size)
    raise BadRequest(
        f"{filename}: only wheels (.whl) and sdists (.tar.gz) are accepted; "
        "build them with `p2phost plugin build`"
    )



def _check_filename_name(filename: str, raw: str) -> None:
    # PEP 427/625: the file name carries the normalised name with '_' for separators.
    expected = normalize_name(raw).replace("-", "_")
    if raw != expected:
        raise BadRequest(
            f"{filename}: the file name must start with the normalised distribution name "
            f"{expected!r}, not {raw!r}; rebuild it with a current build backend "
            "(p2phost plugin build)"
        )


def _license_and_urls(headers: Message) -> tuple[str | None, tuple[tuple[str, str], ...]]:
    license_text = headers.get("License-Expression") or headers.get("License") or ""
    license_line = str(license_text).strip().splitlines()[0][:200] if license_text.strip() else None
    urls: list[tuple[str, str]] = []
    home = str(headers.get("Home-page") or "").strip()
    if home:
        urls.append(("Homepage", home))
    for value in headers.get_all("Project-URL") or []:
        label, _, url = str(value).partition(",")
        urls.append((label.strip()[:60] or "Link", url.strip()))
    # Only plain web links reach the page: no javascript:, data: or relative tricks.
    safe = tuple((label, url) for label, url in urls
                 if re.fullmatch(r"https?://[^\s\"'<>]+", url))
    return license_line, safe[:20]


def _inspect_wheel(path: Path, filename: str, size: int, max_size: int) -> Inspected:
    try:
        name, version, _, _ = parse_wheel_filename(filename)
    except InvalidWheelFilename as exc:
        raise BadRequest(f"{filename}: not a valid wheel file name ({exc})") from exc
    _check_filename_name(filename, filename.split("-", 1)[0])
    try:
        _, kept = scan_wheel(path, filename, max_size * EXPANSION_FACTOR, keep=("METADATA",))
        core = kept["METADATA"].decode("utf-8")
    except (zlib.error, EOFError, OSError) as exc:
        raise BadRequest(f"{filename}: not a wheel (corrupt archive: {exc})") from exc
    except zipfile.BadZipFile as exc:
        raise BadRequest(f"{filename}: member is corrupt ({exc})") from exc
    except UnicodeDecodeError as exc:
        raise BadRequest(f"{filename}: METADATA is not UTF-8") from exc
    headers = HeaderParser().parsestr(core)
    _check_name_version(filename, "its METADATA", headers, name, version)
    try:
        meta = PluginMetadata.from_wheel(path)
    except PluginMetadataError as exc:
        if normalize_name(name) not in SUPPORT_DISTRIBUTIONS:
            raise _metadata_error(exc) from exc
        # p2phost's own distributions: served to pip and uv, never offered as plugins.
        meta = PluginMetadata(name=normalize_name(name), version=str(version), kinds=(),
                              host_api="", summary=str(headers.get("Summary") or ""))
    readme, readme_type, _ = _readme(filename, core)
    license_line, urls = _license_and_urls(headers)
    return Inspected(
        filename=filename, name=meta.name, display_name=_display_name(meta, headers),
        version=str(version), packagetype="bdist_wheel", metadata=meta, core_metadata=core,
        readme=readme, readme_type=readme_type,
        requires_python=headers.get("Requires-Python"), sha256=file_sha256(path), size=size,
        dist_key=dist_key_of(filename),
        license=license_line, urls=urls,
    )


def _inspect_sdist(path: Path, filename: str, size: int, max_size: int) -> Inspected:
    try:
        name, version = parse_sdist_filename(filename)
    except InvalidSdistFilename as exc:
        raise BadRequest(f"{filename}: not a valid sdist file name ({exc})") from exc
    root = filename.removesuffix(".tar.gz")
    _check_filename_name(filename, root.rsplit("-", 1)[0])
    try:
        kept = scan_sdist(path, filename, root, max_size * EXPANSION_FACTOR,
                          keep=("PKG-INFO", "pyproject.toml"))
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise BadRequest(f"{filename}: not an sdist (not a gzip tar archive: {exc})") from exc
    for required in ("PKG-INFO", "pyproject.toml"):
        if required not in kept:
            raise BadRequest(f"{filename}: {root}/{required} is missing")
    try:
        pkg_info, pyproject = (kept[k].decode("utf-8") for k in ("PKG-INFO", "pyproject.toml"))
    except UnicodeDecodeError as exc:
        raise BadRequest(f"{filename}: PKG-INFO or pyproject.toml is not UTF-8") from exc
    readme, readme_type, headers = _readme(filename, pkg_info)
    _check_name_version(filename, "its PKG-INFO", headers, name, version)
    try:
        data = tomllib.loads(pyproject)
    except tomllib.TOMLDecodeError as exc:
        raise BadRequest(f"{filename}: pyproject.toml is not valid TOML: {exc}") from exc
    table = data.get("tool", {}).get("p2phost", {}).get("plugin")
    if not isinstance(table, dict):
        raise _metadata_error(PluginMetadataError(filename, ["no [tool.p2phost.plugin] table"]))
    try:
        meta = PluginMetadata.from_toml(
            pyproject, str(headers["Name"]), str(headers["Version"]), source=filename,
            summary=str(headers.get("Summary") or ""),
        )
    except PluginMetadataError as exc:
        raise _metadata_error(exc) from exc
    license_line, urls = _license_and_urls(headers)
    return Inspected(
        filename=filename, name=meta.name, display_name=_display_name(meta, headers),
        version=str(version), packagetype="sdist", metadata=meta, core_metadata=None,
        readme=readme, readme_type=readme_type,
        requires_python=headers.get("Requires-Python"), sha256=file_sha256(path), size=size,
        dist_key=dist_key_of(filename), license=license_line, urls=urls,
    )
