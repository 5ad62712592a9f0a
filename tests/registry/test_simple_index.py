"""The simple index as pip, uv and twine use it, and its HTTP details (PEP 503/658/691/700)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import Registry

JSON = "application/vnd.pypi.simple.v1+json"
BIN = Path(sys.executable).parent


def run(*cmd: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        cmd, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", **(env or {})},
    )
    assert result.returncode == 0, f"{cmd}\n{result.stdout}\n{result.stderr}"
    return result


def tool(name: str) -> str:
    found = shutil.which(name, path=str(BIN)) or shutil.which(name)
    assert found, f"{name} is a dev dependency: source scripts/_venv.sh"
    return found


@pytest.fixture(scope="module")
def published(sqlite_registry: Registry, built: dict[str, Path]) -> Registry:
    """demo-transport 1.0.0 uploaded by twine, 1.1.0 and demo-codec by uv publish."""
    token = sqlite_registry.token("publisher")
    run(tool("twine"), "upload", "--non-interactive", "--disable-progress-bar",
        "--repository-url", f"{sqlite_registry.url}/legacy/", "-u", "__token__", "-p", token,
        str(built["demo_transport-1.0.0-py3-none-any.whl"]),
        str(built["demo_transport-1.0.0.tar.gz"]))
    run(tool("uv"), "publish", "--publish-url", f"{sqlite_registry.url}/legacy/",
        "--token", token, str(built["demo_transport-1.1.0-py3-none-any.whl"]),
        str(built["demo_codec-1.0.0-py3-none-any.whl"]))
    return sqlite_registry


def test_twine_and_uv_published(published: Registry) -> None:
    info = published.client().get("/api/v1/plugins/demo-transport").json()
    assert [v["version"] for v in info["versions"]] == ["1.1.0", "1.0.0"]
    assert info["owners"] == ["publisher"]


def test_pip_installs_and_skips_yanked(published: Registry, tmp_path: Path) -> None:
    index = f"{published.url}/simple/"
    run(sys.executable, "-m", "pip", "install", "--no-cache-dir", "--index-url", index,
        "--target", str(tmp_path / "a"), "demo-transport")
    assert (tmp_path / "a" / "demo_transport-1.1.0.dist-info").is_dir()
    token = published.token("publisher")
    with published.client() as client:
        client.post("/api/v1/plugins/demo-transport/1.1.0/yank", json={"reason": "bad"},
                    headers={"Authorization": f"Bearer {token}"}).raise_for_status()
    try:
        run(sys.executable, "-m", "pip", "install", "--no-cache-dir", "--index-url", index,
            "--target", str(tmp_path / "b"), "demo-transport")
        assert (tmp_path / "b" / "demo_transport-1.0.0.dist-info").is_dir()
    finally:
        with published.client() as client:
            client.post("/api/v1/plugins/demo-transport/1.1.0/unyank",
                        headers={"Authorization": f"Bearer {token}"}).raise_for_status()


def test_uv_pip_installs(published: Registry, tmp_path: Path) -> None:
    run(tool("uv"), "pip", "install", "--no-cache", "--python", sys.executable,
        "--index-url", f"{published.url}/simple/", "--target", str(tmp_path / "t"),
        "demo-transport==1.0.0", "demo-codec")
    assert (tmp_path / "t" / "demo_transport-1.0.0.dist-info").is_dir()
    assert (tmp_path / "t" / "demo_codec-1.0.0.dist-info").is_dir()


def test_content_negotiation_and_pep_fields(published: Registry) -> None:
    with published.client() as client:
        html = client.get("/simple/")
        assert html.headers["content-type"].startswith("text/html")
        assert html.headers["vary"] == "Accept"
        assert '<a href="/simple/demo-transport/">demo-transport</a>' in html.text
        pip_accept = f"{JSON}, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01"
        root = client.get("/simple/", headers={"Accept": pip_accept})
        assert root.headers["content-type"] == JSON
        assert {"name": "demo-codec"} in root.json()["projects"]
        page = client.get("/simple/demo-transport/", headers={"Accept": JSON}).json()
        assert page["meta"]["api-version"] == "1.1"
        assert page["versions"] == ["1.0.0", "1.1.0"]
        wheel = next(f for f in page["files"] if f["filename"].endswith("1.1.0-py3-none-any.whl"))
        assert wheel["size"] > 0 and wheel["upload-time"].endswith("Z")
        body = client.get(wheel["url"] + ".metadata").content
        assert hashlib.sha256(body).hexdigest() == wheel["core-metadata"]["sha256"]
        assert body.startswith(b"Metadata-Version") and b"Name: demo-transport" in body
        sdist = next(f for f in page["files"] if f["filename"].endswith(".tar.gz"))
        assert sdist["core-metadata"] is False
        html_page = client.get("/simple/demo-transport/",
                               headers={"Accept": "application/vnd.pypi.simple.v1+html"})
        assert html_page.headers["content-type"] == "application/vnd.pypi.simple.v1+html"
        assert f'#sha256={wheel["hashes"]["sha256"]}' in html_page.text
        assert f'data-core-metadata="sha256={wheel["core-metadata"]["sha256"]}"' in html_page.text
        assert client.get("/simple/", headers={"Accept": "image/png"}).status_code == 406
        moved = client.get("/simple/Demo_Transport/", follow_redirects=False)
        assert moved.status_code == 301 and moved.headers["location"] == "/simple/demo-transport/"
        assert client.get("/simple/nothing-here/").status_code == 404


def test_etag_and_range(published: Registry) -> None:
    with published.client() as client:
        first = client.get("/simple/demo-transport/")
        etag = first.headers["etag"]
        again = client.get("/simple/demo-transport/", headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.content == b""
        url = "/files/demo-transport/demo_transport-1.0.0-py3-none-any.whl"
        whole = client.get(url).content
        part = client.get(url, headers={"Range": "bytes=10-19"})
        assert part.status_code == 206 and part.content == whole[10:20]
        assert part.headers["content-range"] == f"bytes 10-19/{len(whole)}"
        tail = client.get(url, headers={"Range": "bytes=-5"})
        assert tail.content == whole[-5:]
        assert client.get(url, headers={"Range": f"bytes={len(whole) + 5}-"}).status_code == 416
        assert client.head(url).headers["content-length"] == str(len(whole))
