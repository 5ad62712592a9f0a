"""The web marketplace: server-rendered pages, checked as HTML and in headless Chromium."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from p2phost_sdk import HOST_API

from .conftest import Registry, skip_or_fail

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)


@pytest.fixture(scope="module")
def market(sqlite_registry: Registry, built: dict[str, Path]) -> Registry:
    token = sqlite_registry.token("web")
    with sqlite_registry.client() as client:
        for name in ("demo_transport-1.0.0-py3-none-any.whl",
                     "demo_transport-1.1.0-py3-none-any.whl",
                     "demo_codec-1.0.0-py3-none-any.whl"):
            client.post("/api/v1/upload", files={"file": (name, built[name].read_bytes())},
                        headers={"Authorization": f"Bearer {token}"}).raise_for_status()
        client.get("/files/demo-transport/demo_transport-1.1.0-py3-none-any.whl")
    return sqlite_registry


def test_home_search_and_filters(market: Registry) -> None:
    with market.client() as client:
        home = client.get("/").text
        assert "Newest" in home and "Most downloaded" in home
        assert home.index("demo-transport") < home.index("Most downloaded") < home.rindex(
            "demo-transport")
        codecs = client.get("/", params={"kind": "codec"}).text
        assert "1 plugin of kind codec" in codecs and "demo-codec" in codecs
        assert "/plugins/demo-transport" not in codecs
        found = client.get("/", params={"q": "transport"}).text
        assert "/plugins/demo-transport" in found and "/plugins/demo-codec" not in found
        assert 'name="q" value="transport"' in found
        missing = client.get("/plugins/demo-transprt")
        assert missing.status_code == 404 and "did you mean demo-transport" in missing.text


def test_plugin_page(market: Registry) -> None:
    with market.client() as client:
        page = client.get("/plugins/demo-transport").text
        assert "p2phost plugin install demo-transport==1.1.0" in page
        # uv, not pip: pip would take a higher same-named version from PyPI.
        assert (f"uv pip install --extra-index-url {market.url}/simple/ "
                "demo-transport==1.1.0") in page
        assert "works with this host" in page
        assert "<li>connect</li>" in page and "schemes: demo" in page
        assert "<em>bytes</em>" in page  # the README, rendered
        assert "onerror" not in page and 'href="javascript:' not in page
        assert "/plugins/demo-transport/1.0.0" in page and ">web<" in page.replace("\n", "")
        older = client.get("/plugins/demo-transport/1.0.0").text
        assert "demo-transport==1.0.0" in older
        codec = client.get("/plugins/demo-codec").text
        assert f"not for host API {HOST_API}" in codec
        assert client.get("/static/style.css").status_code == 200
        spec = client.get("/api/v1/openapi.json").json()
        assert spec["openapi"].startswith("3.") and "/api/v1/upload" in spec["paths"]


def test_in_headless_chromium(market: Registry, tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        skip_or_fail("chromium is not installed (run scripts/ensure-chromium.sh)")
    args = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*args, "--dump-dom", f"{market.url}/plugins/demo-transport"],
                         capture_output=True, text=True, timeout=60)
    assert dom.returncode == 0, dom.stderr
    assert "demo-transport" in dom.stdout and "Moves <em>bytes</em>" in dom.stdout
    # The README's handler would have marked the body had it run.
    assert 'data-pwned="1"' not in dom.stdout
    assert "<script" not in dom.stdout
    home = subprocess.run([*args, "--dump-dom", f"{market.url}/?kind=codec"],
                          capture_output=True, text=True, timeout=60)
    assert "demo-codec" in home.stdout and "demo-transport" not in home.stdout
    shot = tmp_path / "plugin.png"
    subprocess.run([*args, "--window-size=1200,900", f"--screenshot={shot}",
                    f"{market.url}/plugins/demo-transport"], capture_output=True, timeout=60)
    assert shot.stat().st_size > 10_000
