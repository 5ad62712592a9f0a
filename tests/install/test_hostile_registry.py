"""A hostile registry: a wheel that never ends, a METADATA of tens of megabytes.

Each is refused with one clear error and a fix, quickly and in bounded memory: the
download stops at the size the registry published, METADATA is read up to a cap.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator

from .conftest import Workspace, hand_made_registry

Make = Callable[..., Workspace]
MB = 1024 * 1024


def release(filename: str, wheel: bytes, size: int) -> dict[str, object]:
    """A registry's release entry for ``wheel``, published with ``size`` bytes."""
    return {"version": "1.0.0", "kinds": ["app"], "host_api": ">=1.0,<2", "requires": {},
            "capabilities": [], "yanked": False, "files": [{
                "filename": filename, "url": "/files/x.whl",
                "sha256": hashlib.sha256(wheel).hexdigest(), "size": size,
                "packagetype": "bdist_wheel"}]}


def plugin_page(name: str, entry: dict[str, object]) -> bytes:
    return json.dumps({"name": name, "owners": ["mallory"], "versions": [entry]}).encode()


def test_a_wheel_longer_than_published_is_stopped_at_its_size(workspace: Make) -> None:
    wheel = b"PK" + bytes(10_000)
    sent = [0]

    def endless() -> Iterator[bytes]:
        chunk = bytes(MB)
        while sent[0] < 512 * MB:  # bounded, in case the client never stops
            sent[0] += len(chunk)
            yield chunk

    pages = {"/api/v1/plugins/endless": plugin_page(
                 "endless", release("endless-1.0.0-py3-none-any.whl", wheel, len(wheel))),
             "/files/x.whl": endless}
    ws = workspace()
    with hand_made_registry(pages) as url:
        started = time.monotonic()
        err = ws.fails("plugin", "install", "endless", "--yes", "--registry", url)
        took = time.monotonic() - started
    assert "endless-1.0.0-py3-none-any.whl from" in err
    assert f"is larger than the {len(wheel)} bytes its source published" in err, err
    assert "fix: " in err
    assert sent[0] < 64 * MB, f"the registry sent {sent[0] // MB} MB before the install stopped"
    assert took < 60
    assert ws.installed() == {} and ws.lock == ""
    assert not list(ws.cache.rglob("endless-1.0.0-py3-none-any.whl*"))


# The installer's own peak, read by itself as it ends. Not wait4's ru_maxrss: Linux keeps
# the highest RSS across exec, and a child that subprocess spawns with vfork starts out
# holding its parent's peak: under xdist that was the pytest worker's 511 MB.
_REPORT_PEAK = """
import runpy, sys
try:
    sys.argv = ["p2phost", *sys.argv[2:]]
    runpy.run_module("p2phost", run_name="__main__")
finally:
    status = open("/proc/self/status").read()
    open(sys.argv_peak, "w").write(status.split("VmHWM:")[1].split()[0])
"""


def with_peak(ws: Workspace, *args: str) -> tuple[int, str, int]:
    """``p2phost ARGS`` in the project: exit code, stderr, and its peak memory (bytes)."""
    peak_file = ws.root / "peak.txt"
    script = _REPORT_PEAK.replace("sys.argv_peak", repr(str(peak_file)))
    process = subprocess.run([sys.executable, "-c", script, "p2phost", *args], cwd=ws.root,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "P2PHOST_CACHE_DIR": str(ws.cache)})
    return process.returncode, process.stderr, int(peak_file.read_text()) * 1024


def _huge_metadata_wheel(megabytes: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as wheel:
        wheel.writestr("huge/__init__.py", "")
        with wheel.open("huge-1.0.0.dist-info/METADATA", "w", force_zip64=True) as member:
            member.write(b"Metadata-Version: 2.1\nName: huge\nVersion: 1.0.0\n")
            line = b"Requires-Dist: p2phost-sdk>=1.0\n" * (MB // 32)
            for _ in range(megabytes):
                member.write(line)
    return buffer.getvalue()


def test_a_huge_metadata_is_refused_without_reading_it_whole(workspace: Make) -> None:
    # 60 MB of METADATA: under the unpack limits (64 MiB, 100:1 per member), so the wheel
    # is unpacked and only the METADATA cap stands in the way.
    wheel = _huge_metadata_wheel(60)
    filename = "huge-1.0.0-py3-none-any.whl"
    pages = {"/api/v1/plugins/huge": plugin_page("huge", release(filename, wheel, len(wheel))),
             "/files/x.whl": wheel}
    ws = workspace()
    with hand_made_registry(pages) as url:
        code, err, peak = with_peak(ws, "plugin", "install", "huge", "--yes", "--registry", url)
    print(f"a wheel with 60 MB of METADATA: the installer peaked at {peak // MB} MB")
    assert code != 0 and "Traceback" not in err
    assert "huge-1.0.0.dist-info/METADATA is over 1048576 bytes" in err, err
    assert "fix: " in err
    # Read whole, 60 MB of METADATA is held as bytes, as text and as its lines: the
    # installer peaked at 1.8 GB. Capped: about 30 MB.
    assert peak < 200 * MB, f"the installer peaked at {peak // MB} MB"
    assert ws.installed() == {} and ws.lock == ""
