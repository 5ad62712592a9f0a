"""The shared download cache: files stored by their sha256, verified on every use.

Files live at ``ROOT/files/ab/abcdef.../NAME.whl``. A download is written to a
``.part`` file beside its final place, hashed while it streams, and renamed into place
only when the hash matches what its source published — so the cache never holds a
file that failed verification, even if the download is killed half way.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from ._errors import InstallError, IntegrityError, RegistryError
from ._http import Fetcher

#: Most bytes of one wheel downloaded when its source published no size (PyPI's own
#: largest files are about this); with a size, that size is the cap.
MAX_DOWNLOAD = 2**30
#: Called once per downloaded chunk with its size (a progress bar's ``advance``).
Advance = Callable[[int], None]
#: Starts a progress display for one download: (label, total bytes or None) -> advance.
ProgressFactory = Callable[[str, int | None], Advance]


def default_cache_dir() -> Path:
    """``$P2PHOST_CACHE_DIR``, else ``$XDG_CACHE_HOME/p2phost``, else ``~/.cache/p2phost``."""
    if explicit := os.environ.get("P2PHOST_CACHE_DIR"):
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "p2phost"


def file_sha256(path: Path) -> str:
    """The sha256 of a file, in hex."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


class DownloadCache:
    """Content-addressed wheel files shared by every project of this user."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or default_cache_dir()

    def path(self, sha256: str, filename: str) -> Path:
        """Where the file with this hash is (or would be) kept."""
        return self.root / "files" / sha256[:2] / sha256 / filename

    def get(self, sha256: str, filename: str) -> Path | None:
        """The cached file, if present and intact (a corrupted copy is dropped)."""
        path = self.path(sha256, filename)
        if not path.is_file():
            return None
        if file_sha256(path) != sha256:
            path.unlink(missing_ok=True)
            return None
        return path

    def fetch(self, url: str, sha256: str | None, filename: str, fetcher: Fetcher,
              progress: ProgressFactory | None = None, size: int | None = None) -> Path:
        """The verified file: from the cache, else downloaded from ``url``.

        ``sha256`` None means the source published no hash (a local find-links
        directory): the file's own hash is then recorded and checked from then on. The
        download stops at ``size`` bytes when the source published it (else at
        ``MAX_DOWNLOAD``): a source that sends more is refused, not stored.
        """
        if sha256 and (hit := self.get(sha256, filename)):
            return hit
        staging = self.root / "tmp"
        try:
            staging.mkdir(parents=True, exist_ok=True)
            part = staging / f"{filename}.{os.getpid()}.part"
            digest = hashlib.sha256()
            advance = progress(filename, size) if progress else None
            cap, got_bytes = MAX_DOWNLOAD if size is None else size, 0

            def on_chunk(chunk: bytes) -> None:
                nonlocal got_bytes
                got_bytes += len(chunk)
                if got_bytes > cap:
                    raise _oversized(filename, url, size, cap)
                digest.update(chunk)
                if advance:
                    advance(len(chunk))

            try:
                with open(part, "wb") as out:
                    fetcher.copy(url, out, on_chunk)
            except (RegistryError, IntegrityError):
                part.unlink(missing_ok=True)
                raise
            except OSError as exc:
                part.unlink(missing_ok=True)
                if isinstance(exc, TimeoutError | ConnectionError):
                    raise RegistryError(f"downloading {url} failed: {exc}",
                                        fix="retry; check that the registry is running") from exc
                raise
            got = digest.hexdigest()
            if sha256 and got != sha256:
                part.unlink(missing_ok=True)
                raise IntegrityError(
                    f"{filename} from {url} is not the file its source published: sha256 "
                    f"{got} != {sha256} (tampered or truncated download); nothing was installed",
                    fix="retry; if it persists, tell the registry's operator")
            final = self.path(got, filename)
            final.parent.mkdir(parents=True, exist_ok=True)
            part.replace(final)
            return final
        except OSError as exc:
            raise InstallError(f"cannot write the download cache {self.root}: {exc}",
                               fix="free disk space or set P2PHOST_CACHE_DIR to a writable "
                                   "directory") from exc


def _oversized(filename: str, url: str, size: int | None, cap: int) -> IntegrityError:
    said = (f"the {size} bytes its source published" if size is not None
            else f"{cap} bytes, the most p2phost downloads for one wheel")
    return IntegrityError(f"{filename} from {url} is larger than {said}; the download was "
                          "stopped and nothing was installed",
                          fix="retry; if it persists, tell the registry's operator (its "
                              "file or its published size is wrong)")
