"""Upload validation: a file is inspected whole before anything is stored.

A wheel or sdist is accepted only when it is a well-formed archive whose name and version
agree with its file name and its own metadata, with every member inside the archive root
and no links, and with valid p2phost plugin metadata.
"""

from __future__ import annotations

import hashlib
import re
import stat
import tarfile
import tomllib
import zipfile
from dataclasses import dataclass
from email.message import Message
from email.parser import HeaderParser, Parser
from pathlib import Path, PurePosixPath

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import Version

from p2phost_sdk import PluginMetadata, PluginMetadataError, normalize_name

from ._distributions import SUPPORT_DISTRIBUTIONS
from ._errors import BadRequest, PayloadTooLarge

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


def file_sha256(path: Path) -> str:
    """The hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _safe_member(filename: str, member: str) -> PurePosixPath:
    if member.startswith("/") or "\\" in member or re.match(r"^[A-Za-z]:", member):
        raise BadRequest(f"{filename}: member {member!r} has an absolute path; refused")
    path = PurePosixPath(member)
    if ".." in path.parts:
        raise BadRequest(f"{filename}: member {member!r} points outside the archive root; refused")
    return path


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


def _inspect_wheel(path: Path, filename: str, size: int, max_size: int) -> Inspected:
    try:
        name, version, _, _ = parse_wheel_filename(filename)
    except InvalidWheelFilename as exc:
        raise BadRequest(f"{filename}: not a valid wheel file name ({exc})") from exc
    try:
        with zipfile.ZipFile(path) as wheel:
            infos = wheel.infolist()
            expanded = 0
            for info in infos:
                _safe_member(filename, info.filename)
                if stat.S_ISLNK(info.external_attr >> 16):
                    raise BadRequest(f"{filename}: member {info.filename!r} is a symlink; refused")
                expanded += info.file_size
            if expanded > max_size * EXPANSION_FACTOR:
                raise BadRequest(f"{filename}: expands to {expanded} bytes; refused")
            bad = wheel.testzip()
            if bad is not None:
                raise BadRequest(f"{filename}: member {bad!r} is corrupt (CRC mismatch)")
            names = {i.filename for i in infos}
            dist_infos = {n.split("/", 1)[0] for n in names if "/" in n}
            dist_infos = {d for d in dist_infos if d.endswith(".dist-info")}
            if len(dist_infos) != 1:
                raise BadRequest(f"{filename}: expected exactly one .dist-info directory")
            info_dir = dist_infos.pop()
            for required in ("METADATA", "WHEEL", "RECORD"):
                if f"{info_dir}/{required}" not in names:
                    raise BadRequest(f"{filename}: {info_dir}/{required} is missing")
            core = wheel.read(f"{info_dir}/METADATA").decode("utf-8")
    except zipfile.BadZipFile as exc:
        raise BadRequest(f"{filename}: not a wheel (not a zip archive: {exc})") from exc
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
    return Inspected(
        filename=filename, name=meta.name, display_name=_display_name(meta, headers),
        version=str(version), packagetype="bdist_wheel", metadata=meta, core_metadata=core,
        readme=readme, readme_type=readme_type,
        requires_python=headers.get("Requires-Python"), sha256=file_sha256(path), size=size,
    )


def _inspect_sdist(path: Path, filename: str, size: int, max_size: int) -> Inspected:
    try:
        name, version = parse_sdist_filename(filename)
    except InvalidSdistFilename as exc:
        raise BadRequest(f"{filename}: not a valid sdist file name ({exc})") from exc
    root = filename.removesuffix(".tar.gz")
    try:
        with tarfile.open(path, "r:gz") as tar:
            members = tar.getmembers()
            expanded = 0
            for member in members:
                parts = _safe_member(filename, member.name).parts
                if member.issym() or member.islnk():
                    raise BadRequest(f"{filename}: member {member.name!r} is a link; refused")
                if not (member.isfile() or member.isdir()):
                    raise BadRequest(f"{filename}: member {member.name!r} is not a regular file")
                if not parts or parts[0] != root:
                    raise BadRequest(f"{filename}: member {member.name!r} is outside {root}/")
                expanded += member.size
            if expanded > max_size * EXPANSION_FACTOR:
                raise BadRequest(f"{filename}: expands to {expanded} bytes; refused")
            pkg_info = _read_member(tar, f"{root}/PKG-INFO", filename)
            pyproject = _read_member(tar, f"{root}/pyproject.toml", filename)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise BadRequest(f"{filename}: not an sdist (not a gzip tar archive: {exc})") from exc
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
    return Inspected(
        filename=filename, name=meta.name, display_name=_display_name(meta, headers),
        version=str(version), packagetype="sdist", metadata=meta, core_metadata=None,
        readme=readme, readme_type=readme_type,
        requires_python=headers.get("Requires-Python"), sha256=file_sha256(path), size=size,
    )


def _read_member(tar: tarfile.TarFile, member: str, filename: str) -> str:
    try:
        fh = tar.extractfile(member)
    except KeyError as exc:
        raise BadRequest(f"{filename}: {member} is missing") from exc
    if fh is None:
        raise BadRequest(f"{filename}: {member} is not a file")
    try:
        return fh.read().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"{filename}: {member} is not UTF-8") from exc
