"""Plugins' own Python requirements, resolved against the user's usual package index.

pip resolves them (``--dry-run --report``) because pip reads the user's configuration —
``pip.conf``, ``PIP_INDEX_URL``, extra indexes, find-links, constraints, certificates —
so "the package index the user already uses" is the one asked. pip only resolves;
the wheels it picks are downloaded into p2phost's cache and verified like plugins, so
``plugin sync --offline`` can install them again.

What the host's own environment already provides (``cryptography``, ``msgpack``...) is
left to the host: a second copy in the plugin environment would come first on
``sys.path`` and shadow the host's own, so pip resolves against the installed host.
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path, PurePosixPath
from typing import Any

from packaging.utils import canonicalize_name

from .._lock import LockedFile
from ._errors import ResolutionError
from ._wheels import HOST_DISTRIBUTIONS

#: Resolving can mean a slow index; bounded so a hung index cannot hang an install.
PIP_TIMEOUT = 300.0


def resolve_packages(requirements: list[str]) -> tuple[LockedFile, ...]:
    """Exact wheels (name, version, URL, sha256) for ``requirements`` and their dependencies."""
    if not requirements:
        return ()
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet",
               "--only-binary", ":all:", "--report", "-", *sorted(requirements)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise ResolutionError(f"pip took over {PIP_TIMEOUT:g} s to resolve the plugins' Python "
                              f"requirements ({', '.join(requirements)})",
                              fix="check that your Python package index is reachable") from None
    if done.returncode != 0:
        lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
        detail = " ".join(lines[-3:]) if lines else f"pip exited {done.returncode}"
        raise ResolutionError(
            f"cannot resolve the plugins' Python requirements ({', '.join(requirements)}): "
            f"{detail}", fix="check your Python package index (pip config list)")
    try:
        report = json.loads(done.stdout)
        wanted = [item for item in report["install"]
                  if canonicalize_name(item["metadata"]["name"]) not in HOST_DISTRIBUTIONS]
    except (ValueError, KeyError, TypeError) as exc:
        raise ResolutionError(f"pip's installation report is unreadable ({exc!r})",
                              fix="upgrade pip: python -m pip install -U pip") from exc
    for item in wanted:
        _refuse_shadowing(item["metadata"], requirements)
    return tuple(_locked(item) for item in wanted)


def _refuse_shadowing(metadata: dict[str, Any], requirements: list[str]) -> None:
    """pip only plans a package the host already has when the host's version does not fit."""
    name, version = str(metadata["name"]), str(metadata["version"])
    try:
        host_version = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return
    raise ResolutionError(
        f"the plugins' Python requirements ({', '.join(requirements)}) need {name} {version}, "
        f"but this host provides {name} {host_version} to every plugin",
        fix=f"upgrade p2phost's environment (pip install -U {name}), or pick another plugin "
            "version with `p2phost plugin install NAME==VERSION`")


def _locked(item: dict[str, Any]) -> LockedFile:
    metadata, info = item["metadata"], item["download_info"]
    url = str(info["url"])
    parsed = urllib.parse.urlsplit(url)
    filename = urllib.parse.unquote(PurePosixPath(parsed.path).name)
    hashes = info.get("archive_info", {}).get("hashes", {})
    sha256 = hashes.get("sha256") or _local_sha256(url)
    return LockedFile(
        name=canonicalize_name(str(metadata["name"])),
        version=str(metadata["version"]),
        source=f"{parsed.scheme}://{parsed.netloc}",
        filename=filename,
        sha256=sha256,
        url=url,
    )


def _local_sha256(url: str) -> str:
    """A ``file://`` wheel from find-links has no published hash: hash it once here."""
    from ._cache import file_sha256

    if not url.startswith("file://"):
        raise ResolutionError(f"the package index published no sha256 for {url}",
                              fix="use an index that publishes hashes (PyPI does)")
    return file_sha256(Path(urllib.request.url2pathname(urllib.parse.urlsplit(url).path)))
