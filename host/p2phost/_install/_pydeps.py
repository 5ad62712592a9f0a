"""Plugins' own Python requirements, resolved against the user's usual package index.

pip resolves them (``--dry-run --report``) because pip reads the user's configuration —
``pip.conf``, ``PIP_INDEX_URL``, extra indexes, find-links, constraints, certificates —
so "the package index the user already uses" is the one asked. pip only resolves;
the wheels it picks are downloaded into p2phost's cache and verified like plugins, so
``plugin sync --offline`` can install them again.

pip resolves in isolation: it sees the host's own distributions (p2phost, p2phost-sdk
and their requirements, see ``_hostdists``) as installed, and nothing else of the host's
venv. The host's versions are thus constraints (a second copy in the plugin environment
would come first on ``sys.path`` and shadow the host's own), and a package that merely
happens to be in the host's venv (``cbor2`` on one machine, not on another) is locked all
the same: one manifest gives the same lock on any machine.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from packaging.utils import canonicalize_name

from .._lock import LockedFile
from ._errors import ResolutionError
from ._hostdists import host_distributions, host_version

#: Resolving can mean a slow index; bounded so a hung index cannot hang an install.
PIP_TIMEOUT = 300.0


def resolve_packages(requirements: list[str]) -> tuple[LockedFile, ...]:
    """Exact wheels (name, version, URL, sha256) for ``requirements`` and their dependencies."""
    if not requirements:
        return ()
    pip = importlib.util.find_spec("pip")
    if pip is None or not pip.submodule_search_locations:
        raise ResolutionError(
            f"the plugins' Python requirements ({', '.join(requirements)}) are resolved by "
            f"pip, which is not installed in p2phost's environment ({sys.prefix})",
            fix=f"{sys.executable} -m ensurepip (or: uv pip install --python "
                f"{sys.executable} pip)")
    arguments = ["install", "--dry-run", "--quiet", "--only-binary", ":all:",
                 "--report", "-", *sorted(requirements)]
    try:
        with tempfile.TemporaryDirectory(prefix="p2phost-resolve-") as scratch:
            # Not the working directory: ``python -m pip`` drops that from sys.path.
            view = Path(scratch) / "site"
            _host_view(view, Path(next(iter(pip.submodule_search_locations))))
            done = subprocess.run(
                [sys.executable, "-c", _ISOLATED_PIP, str(view), *arguments], cwd=scratch,
                capture_output=True, text=True, timeout=PIP_TIMEOUT, stdin=subprocess.DEVNULL,
                env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
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
        wanted = list(report["install"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ResolutionError(f"pip's installation report is unreadable ({exc!r})",
                              fix="upgrade pip: python -m pip install -U pip") from exc
    for item in wanted:
        _refuse_shadowing(item["metadata"], requirements, [w["metadata"] for w in wanted])
    return tuple(_locked(item) for item in wanted)


#: Run by ``python -c``: pip, with only the view (pip itself and the host's metadata) and the
#: standard library on ``sys.path``; the venv's site-packages, .pth paths and PYTHONPATH
#: stay out. ``site`` still ran, so pip reads the user's configuration as usual.
_ISOLATED_PIP = """\
import os, runpy, sys, sysconfig
view = sys.argv[1]
stdlib = {os.path.realpath(sysconfig.get_path(k)) for k in ("stdlib", "platstdlib")}
def kept(entry):
    real = os.path.realpath(entry) if entry else ""
    return (any(real == s or real.startswith(s + os.sep) for s in stdlib)
            and not any(part.endswith("-packages") for part in real.split(os.sep)))
sys.path[:] = [view] + [p for p in sys.path if kept(p)]
sys.argv = ["pip", *sys.argv[2:]]
runpy.run_module("pip", run_name="__main__", alter_sys=True)
"""


def _host_view(view: Path, pip_package: Path) -> None:
    """``view``: pip's package and a ``.dist-info`` with the METADATA of each host distribution.

    pip takes what it finds there as installed: the host's versions satisfy the plugins'
    requirements (or pip plans another version, which ``_refuse_shadowing`` refuses).
    """
    view.mkdir()
    (view / "pip").symlink_to(pip_package, target_is_directory=True)
    for name, dist in sorted(host_distributions().items()):
        info = view / f"{name.replace('-', '_')}-{dist.version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(dist.read_text("METADATA") or
                                       f"Metadata-Version: 2.1\nName: {name}\n"
                                       f"Version: {dist.version}\n", encoding="utf-8")


def _refuse_shadowing(metadata: dict[str, Any], requirements: list[str],
                      planned: Sequence[dict[str, Any]] = ()) -> None:
    """pip only plans one of the host's own distributions when the host's version does not fit."""
    name, version = str(metadata["name"]), str(metadata["version"])
    provided = host_version(name)
    if provided is None:
        return
    from packaging.version import InvalidVersion, Version

    # Who excludes the host's version: often a package pip brought along (aioquic's
    # pyOpenSSL caps cryptography), which the plugins' own requirements do not show.
    capping = [f"{m['name']} {m['version']} requires {line}" for m in planned
               for line in _excluding(m.get("requires_dist") or (), name, provided)]
    try:
        older = Version(version) < Version(provided)
    except InvalidVersion:
        older = False
    change = f"pip install '{name}=={version}'" if older else f"pip install -U {name}"
    raise ResolutionError(
        f"the plugins' Python requirements ({', '.join(requirements)}) need {name} {version}"
        + (f" ({'; '.join(capping)})" if capping else "")
        + f", but this host provides {name} {provided} to every plugin",
        fix=f"{'downgrade' if older else 'upgrade'} {name} in p2phost's environment "
            f"({change}), or pick another plugin version with "
            "`p2phost plugin install NAME==VERSION`")


def _excluding(lines: Any, name: str, provided: str) -> list[str]:
    """The requirement lines among ``lines`` on ``name`` that ``provided`` does not meet."""
    from packaging.requirements import InvalidRequirement, Requirement

    out = []
    for line in lines:
        try:
            requirement = Requirement(str(line))
        except InvalidRequirement:
            continue
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue  # an extra nobody asked for
        if canonicalize_name(requirement.name) == canonicalize_name(name) and \
                not requirement.specifier.contains(provided, prereleases=True):
            out.append(str(requirement))
    return out


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
