"""``plugin publish`` and ``plugin yank``: the registry's JSON API, over httpx.

Uploads stream the file from disk (a progress callback sees every chunk) and each refusal
becomes one message that says what the registry answered and what to do about it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any
from urllib.parse import quote, urljoin

import httpx
from packaging.version import InvalidVersion, Version

from p2phost_sdk import normalize_name

from ._errors import PublishError
from ._pyproject import PluginProject

TOKEN_ENV = "P2PHOST_TOKEN"
#: Seconds to wait for the registry to connect, and for each read or write.
TIMEOUT = httpx.Timeout(60.0, connect=10.0)
_NO_TOKEN_FIX = (f"pass --token TOKEN or set {TOKEN_ENV} (make one with: p2phost registry "
                 "token create --data DIR --owner NAME --scope PLUGIN)")


@dataclass(frozen=True)
class Published:
    """What the registry answered to one upload."""

    filename: str
    name: str
    version: str
    #: The plugin's page on the registry.
    url: str


def upload_files(targets: Iterable[Path]) -> list[Path]:
    """The files to upload: given wheels and sdists, or a project's current ``dist/`` files."""
    files: list[Path] = []
    for target in targets:
        if target.is_dir():
            files.extend(_dist_files(PluginProject.open(target)))
        elif not target.is_file():
            raise PublishError(f"{target} does not exist",
                               fix="pass a plugin project directory, a .whl or a .tar.gz")
        elif not target.name.endswith((".whl", ".tar.gz")):
            raise PublishError(f"{target} is not a wheel or an sdist",
                               fix="pass .whl / .tar.gz files, or the project directory")
        else:
            files.append(target)
    # Wheels first: they carry the metadata the registry checks, so a refusal comes early.
    return sorted(dict.fromkeys(files), key=lambda p: (not p.name.endswith(".whl"), p.name))


def _dist_files(project: PluginProject) -> list[Path]:
    try:
        version = str(Version(project.version))  # file names carry the normal form
    except InvalidVersion:
        version = project.version
    stem = f"{normalize_name(project.name).replace('-', '_')}-{version}"
    dist = project.root / "dist"
    found = [p for p in dist.glob(f"{stem}*") if p.name.endswith((".whl", ".tar.gz"))
             and (p.name.startswith(f"{stem}-") or p.name == f"{stem}.tar.gz")]
    if not found:
        raise PublishError(f"no built files of {project.name} {project.version} in {dist}",
                           fix=f"p2phost plugin build {project.root}")
    return found


class _Progress:
    """A file whose reads report their size, so httpx's streaming shows on a progress bar."""

    def __init__(self, file: IO[bytes], on_chunk: Callable[[int], None]) -> None:
        self._file, self._on_chunk = file, on_chunk

    def read(self, size: int = -1) -> bytes:
        chunk = self._file.read(size)
        self._on_chunk(len(chunk))
        return chunk

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def fileno(self) -> int:
        return self._file.fileno()


class RegistryClient:
    """Publishes to, and yanks from, one registry with one token."""

    def __init__(self, registry: str, token: str | None) -> None:
        token = token or os.environ.get(TOKEN_ENV) or None
        if not token:
            raise PublishError("no registry token: publishing and yanking need one",
                               fix=_NO_TOKEN_FIX)
        self.registry = registry.rstrip("/")
        self._http = httpx.Client(base_url=self.registry, timeout=TIMEOUT,
                                  headers={"Authorization": f"Bearer {token}"})

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._http.close()

    def upload(self, path: Path, on_chunk: Callable[[int], None] = lambda n: None,
               signature: bytes | None = None) -> Published:
        """Upload one wheel or sdist (with its signature document); the registry's answer."""
        with path.open("rb") as file:
            files: dict[str, Any] = {"file": (path.name, _Progress(file, on_chunk),
                                              "application/octet-stream")}
            if signature is not None:
                files["signature"] = (path.name + ".sig", signature, "application/json")
            data = self._call("POST", "/api/v1/upload", path.name, files=files)
        page = urljoin(self.registry + "/", str(data.get("url", "")).lstrip("/"))
        return Published(str(data.get("filename", path.name)), str(data.get("name", "")),
                         str(data.get("version", "")), page)

    def yank(self, name: str, version: str, reason: str) -> dict[str, Any]:
        """Yank ``name`` ``version``; the registry's answer."""
        path = f"/api/v1/plugins/{quote(normalize_name(name))}/{quote(version)}/yank"
        return self._call("POST", path, f"{name} {version}", json={"reason": reason})

    def unyank(self, name: str, version: str) -> dict[str, Any]:
        """Undo a yank of ``name`` ``version``; the registry's answer."""
        path = f"/api/v1/plugins/{quote(normalize_name(name))}/{quote(version)}/unyank"
        return self._call("POST", path, f"{name} {version}", json={})

    def owners(self, name: str, owner: str, *, add: bool) -> dict[str, Any]:
        """Add or remove an owner of ``name``; the registry's answer (the owners now)."""
        base = f"/api/v1/plugins/{quote(normalize_name(name))}/owners"
        if add:
            return self._call("POST", base, f"owners of {name}", json={"owner": owner})
        return self._call("DELETE", f"{base}/{quote(owner)}", f"owners of {name}")

    def tokens(self) -> dict[str, Any]:
        """The calling token's owner and its tokens (prefixes only)."""
        return self._call("GET", "/api/v1/tokens", "the token list")

    def end_token(self, prefix: str, days: float | None = None) -> dict[str, Any]:
        """Revoke a token (``days`` None) or make it expire in ``days``."""
        if days is None:
            return self._call("POST", f"/api/v1/tokens/{quote(prefix)}/revoke", prefix)
        return self._call("POST", f"/api/v1/tokens/{quote(prefix)}/expire", prefix,
                          json={"days": days})

    def register_key(self, publisher_key: str, proof: str) -> dict[str, Any]:
        """Make ``publisher_key`` the token owner's key (``proof``: its base64 signature)."""
        return self._call("POST", "/api/v1/publisher-key", "the publisher key",
                          json={"publisher_key": publisher_key, "proof": proof})

    def _call(self, method: str, path: str, what: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise PublishError(f"the registry at {self.registry} did not answer in time",
                               fix="check that it runs (p2phost registry serve), or pass "
                                   "--registry URL") from None
        except httpx.TransportError as exc:
            raise PublishError(f"cannot reach the registry at {self.registry}: {exc}",
                               fix="start it (p2phost registry serve), or pass --registry "
                                   "URL / set P2PHOST_REGISTRY") from None
        try:
            data = response.json()
        except ValueError:
            data = {"error": response.text.strip()[:300]}
        if not isinstance(data, dict):
            data = {"error": str(data)[:300]}
        if response.status_code >= 400:
            raise _refusal(response.status_code, self.registry, what,
                           str(data.get("error") or response.reason_phrase))
        return data


def _refusal(status: int, registry: str, what: str, message: str) -> PublishError:
    """The registry's refusal as one message with a fix that fits the status."""
    fixes = {
        401: f"check the token: {_NO_TOKEN_FIX}",
        403: "use a token whose scope includes this plugin (p2phost registry token create "
             "--owner NAME --scope PLUGIN), or ask an owner to add you",
        404: f"check the name and version, and that {registry} is a p2phost registry",
        409: "versions are immutable: raise [project] version in pyproject.toml, then "
             "p2phost plugin build and publish again",
        413: "make the file smaller, or ask the registry's operator for a larger limit",
    }
    return PublishError(f"{registry} refused {what} ({status}): {message}",
                        fix=fixes.get(status, "fix what the registry says, then retry"))
