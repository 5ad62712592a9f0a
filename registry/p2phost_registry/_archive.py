"""Archives read as a stream, member by member, with every expansion bounded first.

A wheel's declared sizes (and the ratio of each member to its compressed size) are checked
before any member is inflated; then each member is inflated in chunks, counted against the
same budget, hashed and compared with the wheel's RECORD. An sdist is decompressed through a
counting reader, one member at a time, so a gzip bomb stops at the budget instead of being
expanded whole first (``tarfile.getmembers()`` would).
"""

from __future__ import annotations

import base64
import csv
import gzip
import hashlib
import io
import re
import stat
import tarfile
import zipfile
from collections.abc import Collection
from pathlib import Path, PurePosixPath

from ._errors import BadRequest

#: An archive may expand to at most this many times its own size ...
MAX_RATIO = 50
#: ... or to this much, whichever is larger (tiny archives of small files compress well).
RATIO_FLOOR = 4 * 1024 * 1024
#: More members than this is not a plugin but an attempt to exhaust the server.
MAX_MEMBERS = 10_000
#: Metadata members read into memory (METADATA, RECORD, PKG-INFO, pyproject.toml).
MAX_METADATA = 1024 * 1024
_CHUNK = 1 << 16
_RECORD_SIGNATURES = ("RECORD.jws", "RECORD.p7s")


def expansion_cap(size: int, absolute: int) -> int:
    """How many bytes an archive of ``size`` bytes may expand to."""
    return min(absolute, max(size * MAX_RATIO, RATIO_FLOOR))


def safe_member(filename: str, member: str) -> PurePosixPath:
    """The member's path, refused when absolute or when it climbs out with ``..``."""
    if member.startswith("/") or "\\" in member or re.match(r"^[A-Za-z]:", member):
        raise BadRequest(f"{filename}: member {member!r} has an absolute path; refused")
    path = PurePosixPath(member)
    if ".." in path.parts:
        raise BadRequest(f"{filename}: member {member!r} points outside the archive root; refused")
    return path


def _too_big(filename: str, expanded: int, cap: int) -> BadRequest:
    return BadRequest(
        f"{filename}: expands to more than {cap} bytes ({expanded} so far), over "
        f"{MAX_RATIO}x its size; refused as a decompression bomb"
    )


def _record_hash(filename: str, value: str) -> tuple[str, str]:
    algorithm, _, digest = value.partition("=")
    if algorithm not in ("sha256", "sha384", "sha512") or not digest:
        raise BadRequest(f"{filename}: RECORD hash {value!r} is not sha256=...; rebuild the wheel")
    return algorithm, digest


def _parse_record(filename: str, text: str) -> dict[str, tuple[str, str, int | None]]:
    entries: dict[str, tuple[str, str, int | None]] = {}
    for row in csv.reader(io.StringIO(text)):
        if not row:
            continue
        if len(row) != 3:
            raise BadRequest(f"{filename}: RECORD line {row!r} is not path,hash,size")
        path, hash_value, size = row
        if path in entries:
            raise BadRequest(f"{filename}: RECORD lists {path!r} twice; rebuild the wheel")
        if not hash_value:
            entries[path] = ("", "", None)
            continue
        algorithm, digest = _record_hash(filename, hash_value)
        if size and not size.isdigit():
            raise BadRequest(f"{filename}: RECORD size {size!r} of {path!r} is not a number")
        entries[path] = (algorithm, digest, int(size) if size else None)
    return entries


def scan_wheel(
    path: Path, filename: str, absolute_cap: int, keep: Collection[str] = ()
) -> tuple[str, dict[str, bytes]]:
    """Check a wheel whole; its ``.dist-info`` directory and the members named in ``keep``.

    ``keep`` names members relative to the ``.dist-info`` directory (``METADATA``, ...).
    """
    size = path.stat().st_size
    cap = expansion_cap(size, absolute_cap)
    try:
        with zipfile.ZipFile(path) as wheel:
            infos = wheel.infolist()
            if len(infos) > MAX_MEMBERS:
                raise BadRequest(f"{filename}: {len(infos)} members, over {MAX_MEMBERS}")
            names = [i.filename for i in infos]
            if len(set(names)) != len(names):
                twice = sorted({n for n in names if names.count(n) > 1})
                raise BadRequest(
                    f"{filename}: the archive holds {', '.join(twice)} more than once; an "
                    "installer could read either copy, so it is refused: rebuild the wheel"
                )
            declared = 0
            for info in infos:
                safe_member(filename, info.filename)
                if stat.S_ISLNK(info.external_attr >> 16):
                    raise BadRequest(f"{filename}: member {info.filename!r} is a symlink; refused")
                if (info.file_size > RATIO_FLOOR
                        and info.file_size > MAX_RATIO * max(info.compress_size, 1)):
                    raise BadRequest(
                        f"{filename}: member {info.filename!r} expands {info.file_size} bytes "
                        f"from {info.compress_size}; refused as a decompression bomb")
                declared += info.file_size
                if declared > cap:
                    raise _too_big(filename, declared, cap)
            dist_infos = {n.split("/", 1)[0] for n in names if "/" in n}
            dist_infos = {d for d in dist_infos if d.endswith(".dist-info")}
            if len(dist_infos) != 1:
                raise BadRequest(f"{filename}: expected exactly one .dist-info directory")
            info_dir = dist_infos.pop()
            for required in ("METADATA", "WHEEL", "RECORD"):
                if f"{info_dir}/{required}" not in names:
                    raise BadRequest(f"{filename}: {info_dir}/{required} is missing")
            record_info = wheel.getinfo(f"{info_dir}/RECORD")
            if record_info.file_size > MAX_METADATA:
                raise BadRequest(f"{filename}: RECORD is over {MAX_METADATA} bytes")
            try:
                record = _parse_record(filename, wheel.read(record_info).decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise BadRequest(f"{filename}: RECORD is not UTF-8") from exc
            kept = _stream_members(wheel, infos, filename, info_dir, record, cap, keep)
    except zipfile.BadZipFile as exc:
        raise BadRequest(f"{filename}: not a wheel (not a zip archive: {exc})") from exc
    return info_dir, kept


def _stream_members(
    wheel: zipfile.ZipFile, infos: list[zipfile.ZipInfo], filename: str, info_dir: str,
    record: dict[str, tuple[str, str, int | None]], cap: int, keep: Collection[str],
) -> dict[str, bytes]:
    exempt = {f"{info_dir}/RECORD", *(f"{info_dir}/{s}" for s in _RECORD_SIGNATURES)}
    wanted = {f"{info_dir}/{k}": k for k in keep}
    kept: dict[str, bytes] = {}
    expanded = 0
    listed = set(record)
    for info in infos:
        if info.is_dir():
            continue
        entry = record.get(info.filename)
        if entry is None and info.filename not in exempt:
            raise BadRequest(
                f"{filename}: {info.filename} is not listed in RECORD (an empty or stale "
                "RECORD); rebuild the wheel with a build backend")
        listed.discard(info.filename)
        digest = hashlib.new(entry[0]) if entry and entry[0] else None
        buffer = bytearray() if info.filename in wanted else None
        count = 0
        with wheel.open(info) as member:
            while chunk := member.read(_CHUNK):
                count += len(chunk)
                expanded += len(chunk)
                if expanded > cap:
                    raise _too_big(filename, expanded, cap)
                if digest is not None:
                    digest.update(chunk)
                if buffer is not None:
                    if len(buffer) + len(chunk) > MAX_METADATA:
                        raise BadRequest(f"{filename}: {info.filename} is over "
                                         f"{MAX_METADATA} bytes")
                    buffer += chunk
        if entry and digest is not None:
            actual = base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()
            if actual != entry[1].rstrip("=") or (entry[2] is not None and entry[2] != count):
                raise BadRequest(
                    f"{filename}: {info.filename} does not match its RECORD hash or size; the "
                    "wheel was altered after it was built: rebuild it")
        elif info.filename not in exempt:
            raise BadRequest(f"{filename}: RECORD gives no hash for {info.filename}")
        if buffer is not None:
            kept[wanted[info.filename]] = bytes(buffer)
    if listed:
        raise BadRequest(
            f"{filename}: RECORD lists {', '.join(sorted(listed)[:3])} that the archive does "
            "not hold; rebuild the wheel")
    return kept


class _CountingReader(io.RawIOBase):
    """The decompressed stream of a gzip file, refusing to produce more than ``cap`` bytes."""

    def __init__(self, source: gzip.GzipFile, filename: str, cap: int) -> None:
        self._source = source
        self._filename = filename
        self._cap = cap
        self.count = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        # Never more than a chunk at a time, so one call cannot inflate a bomb whole.
        want = _CHUNK if size is None or size < 0 else min(size, self._cap - self.count + 1)
        data = self._source.read(want)
        self.count += len(data)
        if self.count > self._cap:
            raise _too_big(self._filename, self.count, self._cap)
        return data


def scan_sdist(
    path: Path, filename: str, root: str, absolute_cap: int, keep: Collection[str]
) -> dict[str, bytes]:
    """Check an sdist member by member; the members named in ``keep`` (relative to ``root``)."""
    cap = expansion_cap(path.stat().st_size, absolute_cap)
    wanted = {f"{root}/{k}": k for k in keep}
    kept: dict[str, bytes] = {}
    seen: set[str] = set()
    with gzip.open(path, "rb") as raw:
        reader = _CountingReader(raw, filename, cap)
        with tarfile.open(fileobj=reader, mode="r|") as tar:
            for member in tar:
                if len(seen) >= MAX_MEMBERS:
                    raise BadRequest(f"{filename}: over {MAX_MEMBERS} members")
                name = member.name.rstrip("/")
                parts = safe_member(filename, name).parts
                if name in seen:
                    raise BadRequest(f"{filename}: the archive holds {name} more than once; "
                                     "refused: rebuild the sdist")
                seen.add(name)
                if member.issym() or member.islnk():
                    raise BadRequest(f"{filename}: member {member.name!r} is a link; refused")
                if not (member.isfile() or member.isdir()):
                    raise BadRequest(f"{filename}: member {member.name!r} is not a regular file")
                if not parts or parts[0] != root:
                    raise BadRequest(f"{filename}: member {member.name!r} is outside {root}/")
                if reader.count + member.size > cap:  # before reading a byte of it
                    raise _too_big(filename, reader.count + member.size, cap)
                if name in wanted and member.isfile():
                    if member.size > MAX_METADATA:
                        raise BadRequest(f"{filename}: {name} is over {MAX_METADATA} bytes")
                    fh = tar.extractfile(member)
                    if fh is not None:
                        kept[wanted[name]] = fh.read()
    return kept
