"""The eight findings of the hostile review, each against a real server with hostile files
made here: cache poisoning, PEP 440 twins, filename spellings, ZIP confusion, bombs,
download counting, conditional requests, and what operators and publishers were missing."""

from __future__ import annotations

import gzip
import io
import tarfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from p2phost_registry import Store
from p2phost_registry._state import WATCH_INTERVAL

from ._dists import PLUGIN_TOML, make_sdist, make_wheel
from .conftest import Registry, start_registry, wait_until
from .test_cli import p2phost

PUBLIC = "https://plugins.example.org"


@pytest.fixture(scope="module")
def reg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    # Pages live 60 s here, so a test sees whether something invalidated them.
    server = start_registry(tmp_path_factory.mktemp("review"), None,
                            "--public-url", PUBLIC, "--page-ttl", "60")
    yield server
    server.stop()


def send(reg: Registry, path: Path, owner: str = "pat") -> httpx.Response:
    with reg.client() as client:
        return client.post("/api/v1/upload", files={"file": (path.name, path.read_bytes())},
                           headers={"Authorization": f"Bearer {reg.token(owner)}"})


def auth(reg: Registry, owner: str = "pat") -> dict[str, str]:
    return {"Authorization": f"Bearer {reg.token(owner)}"}


def fresh(tmp_path: Path, name: str) -> Path:
    out = tmp_path / name
    out.mkdir()
    return out


# 1 -------------------------------------------------------------------------------------------

def test_host_header_never_reaches_a_page(reg: Registry, tmp_path: Path) -> None:
    assert send(reg, make_wheel(tmp_path, "hosty-app", "1.0.0")).status_code == 201
    with reg.client() as client:
        poisoned = client.get("/plugins/hosty-app", headers={"Host": "evil.example"})
        assert poisoned.status_code == 200
        assert "evil.example" not in poisoned.text
        for _ in range(2):  # the rendered page and the cached one
            page = client.get("/plugins/hosty-app").text
            assert "evil.example" not in page
            assert f"--extra-index-url {PUBLIC}/simple/ hosty-app==1.0.0" in page
        pypi = client.get("/pypi/hosty-app/json", headers={"Host": "evil.example"}).json()
        assert pypi["urls"][0]["url"].startswith(f"{PUBLIC}/files/hosty-app/")


# 2 -------------------------------------------------------------------------------------------

def test_pep440_equal_versions_are_one_version(reg: Registry, tmp_path: Path) -> None:
    assert send(reg, make_wheel(tmp_path, "twin-app", "0.1.0")).status_code == 201
    twin = send(reg, make_wheel(fresh(tmp_path, "b"), "twin-app", "0.1"))
    assert twin.status_code == 409
    assert "same PEP 440 version as the published twin-app 0.1.0" in twin.json()["error"]
    padded = send(reg, make_wheel(fresh(tmp_path, "c"), "twin-app", "0.1.0.0"))
    assert padded.status_code == 409
    with reg.client() as client:
        info = client.get("/api/v1/plugins/twin-app").json()
        assert [v["version"] for v in info["versions"]] == ["0.1.0"]
        assert info["latest"] == "0.1.0"
        assert client.get("/api/v1/plugins/twin-app/0.1").json()["version"] == "0.1.0"
        assert client.get("/plugins/twin-app/0.1.0.0").status_code == 200
        yanked = client.post("/api/v1/plugins/twin-app/0.1/yank", json={"reason": "x"},
                             headers=auth(reg))
        assert yanked.status_code == 200 and yanked.json()["version"] == "0.1.0"
        simple = client.get("/simple/twin-app/").text
        assert simple.count("<a ") == 1 and 'data-yanked="x"' in simple
        bad = client.post("/api/v1/plugins/twin-app/not-a-version/yank", headers=auth(reg))
        assert bad.status_code == 400 and "PEP 440" in bad.json()["error"]


# 3 -------------------------------------------------------------------------------------------

def test_one_file_per_version_and_tag(reg: Registry, tmp_path: Path) -> None:
    assert send(reg, make_wheel(tmp_path, "shout-codec", "0.1.0")).status_code == 201
    dotted = make_wheel(fresh(tmp_path, "b"), "shout-codec", "0.1.0",
                        filename="shout.codec-0.1.0-py3-none-any.whl")
    refused = send(reg, dotted)
    assert refused.status_code == 400
    assert "must start with the normalised distribution name 'shout_codec'" in refused.text
    upper = make_wheel(fresh(tmp_path, "c"), "shout-codec", "0.1.0",
                       filename="Shout_Codec-0.1.0-py3-none-any.whl")
    assert send(reg, upper).status_code == 400
    # The same tags in another order: the same wheel under another file name.
    both = make_wheel(fresh(tmp_path, "d"), "shout-codec", "0.2.0",
                      filename="shout_codec-0.2.0-py2.py3-none-any.whl")
    assert send(reg, both).status_code == 201
    swapped = make_wheel(fresh(tmp_path, "e"), "shout-codec", "0.2.0",
                         filename="shout_codec-0.2.0-py3.py2-none-any.whl")
    again = send(reg, swapped)
    assert again.status_code == 409
    assert "shout_codec-0.2.0-py2.py3-none-any.whl is already the wheel" in again.text
    sdist = send(reg, make_sdist(tmp_path, "shout-codec", "0.1.0"))
    assert sdist.status_code == 201  # another kind of file of the same version is fine
    other = tmp_path / "shout-codec-0.1.0.tar.gz"
    other.write_bytes((tmp_path / "shout_codec-0.1.0.tar.gz").read_bytes())
    assert send(reg, other).status_code == 400
    with reg.client() as client:
        files = client.get("/api/v1/plugins/shout-codec/0.1.0").json()["files"]
        assert sorted(f["filename"] for f in files) == [
            "shout_codec-0.1.0-py3-none-any.whl", "shout_codec-0.1.0.tar.gz"]


# 4 -------------------------------------------------------------------------------------------

def _info(name: str, version: str) -> str:
    return f"{name.replace('-', '_')}-{version}.dist-info"


def _rewrite(path: Path, member: str, data: bytes | None) -> None:
    """Change (or, with None, drop) one member after the build, keeping its RECORD."""
    rewritten = path.with_suffix(".tmp")
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(rewritten, "w") as dst:
        for info in src.infolist():
            if info.filename != member:
                dst.writestr(info, src.read(info))
            elif data is not None:
                dst.writestr(info, data)
    rewritten.replace(path)


@pytest.mark.parametrize(("kwargs", "after", "needle"), [
    ({"twice": {f"{_info('confused', '1.0.0')}/METADATA":
                b"Metadata-Version: 2.1\nName: other\nVersion: 9.9\n"}}, None, "more than once"),
    ({"twice": {"confused/__init__.py": b"import os\n"}}, None, "more than once"),
    ({"record": b""}, None, "not listed in RECORD"),
    ({"extra": {"confused/x.py": b"x = 1\n"}}, ("confused/x.py", b"x = 2\n"),
     "does not match its RECORD hash"),
    ({"extra": {"confused/x.py": b"x = 1\n"}}, ("confused/x.py", None),
     "that the archive does not hold"),
], ids=["two METADATA", "two __init__.py", "empty RECORD", "member changed after the build",
        "member dropped after the build"])
def test_zip_confusion_is_refused(
    reg: Registry, tmp_path: Path, kwargs: dict[str, object],
    after: tuple[str, bytes | None] | None, needle: str,
) -> None:
    path = make_wheel(tmp_path, "confused", "1.0.0", **kwargs)  # type: ignore[arg-type]
    if after is not None:
        _rewrite(path, *after)
    response = send(reg, path)
    assert response.status_code == 400, response.text
    assert needle in response.json()["error"]
    assert reg.client().get("/api/v1/plugins/confused").status_code == 404


# 5 -------------------------------------------------------------------------------------------

def _sdist_bomb(out: Path, size: int) -> Path:
    root = "bomb_sdist-1.0.0"
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for rel, text in (("PKG-INFO", "Metadata-Version: 2.1\nName: bomb-sdist\n"
                                       "Version: 1.0.0\n\nx\n"),):
            data = text.encode()
            member = tarfile.TarInfo(f"{root}/{rel}")
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
        member = tarfile.TarInfo(f"{root}/zeros.bin")
        member.size = size
        tar.addfile(member, io.BytesIO(bytes(size)))
    path = out / f"{root}.tar.gz"
    path.write_bytes(gzip.compress(raw.getvalue(), compresslevel=9))
    return path


def test_bombs_are_refused_before_they_expand(reg: Registry, tmp_path: Path) -> None:
    sdist = _sdist_bomb(tmp_path, 64 * 1024 * 1024)
    assert sdist.stat().st_size < 200_000  # over 300:1, far under the 20 MB upload limit
    response = send(reg, sdist)
    assert response.status_code == 400
    assert "decompression bomb" in response.json()["error"]
    wheel = make_wheel(tmp_path, "bomb-wheel", "1.0.0", compression=zipfile.ZIP_DEFLATED,
                       extra={"bomb_wheel/zeros.bin": bytes(16 * 1024 * 1024)})
    assert wheel.stat().st_size < 40_000  # about 1000:1, under the absolute cap
    response = send(reg, wheel)
    assert response.status_code == 400
    assert "decompression bomb" in response.json()["error"]
    # A plain, compressible but reasonable wheel still passes.
    fine = make_wheel(tmp_path, "roomy-app", "1.0.0", compression=zipfile.ZIP_DEFLATED,
                      extra={"roomy_app/data.txt": b"p2phost " * 100_000})
    assert send(reg, fine).status_code == 201


# 6 -------------------------------------------------------------------------------------------

def _downloads(reg: Registry, name: str) -> tuple[int, list[int]]:
    store = Store(reg.data)
    try:
        plugin = store.plugin(name)
    finally:
        store.close()
    return plugin.downloads, [v.downloads for v in plugin.versions]


def test_downloads_counted_in_batches_per_version_and_client(
    reg: Registry, tmp_path: Path,
) -> None:
    for version in ("1.0.0", "2.0.0"):
        assert send(reg, make_wheel(tmp_path, "counted-app", version)).status_code == 201
    url = "/files/counted-app/counted_app-1.0.0-py3-none-any.whl"
    with reg.client() as client:
        page = client.get("/plugins/counted-app")
        for _ in range(50):  # a load test from one address
            assert client.get(url).status_code == 200
        assert client.head(url).status_code == 200
        # However long that took (a loaded machine), let the counts reach the database and
        # the change watcher look at the store again: neither the flush nor the watcher
        # seeing this process's own publish may drop the page rendered after it.
        wait_until("the download counted", lambda: _downloads(reg, "counted-app") == (1, [0, 1]))
        time.sleep(2 * WATCH_INTERVAL + 0.5)
        # Downloads never invalidate pages: the same page, with the same ETag, comes back.
        assert client.get("/plugins/counted-app").headers["etag"] == page.headers["etag"]
    other = httpx.Client(base_url=reg.url, transport=httpx.HTTPTransport(
        local_address="127.0.0.2"))
    with other:
        for _ in range(5):
            assert other.get(url).status_code == 200
        assert other.get(url.replace("1.0.0", "2.0.0")).status_code == 200
    wait_until("two counted downloads of 1.0.0 and one of 2.0.0",
               lambda: _downloads(reg, "counted-app") == (3, [1, 2]))


# 7 -------------------------------------------------------------------------------------------

def test_conditional_requests_allow_and_openapi(reg: Registry, tmp_path: Path) -> None:
    assert send(reg, make_wheel(tmp_path, "etag-app", "1.0.0")).status_code == 201
    assert send(reg, make_wheel(tmp_path, "etag-other", "1.0.0")).status_code == 201
    with reg.client() as client:
        first = client.get("/simple/etag-app/")
        etag = first.headers["etag"]
        # A change elsewhere drops every cached page; the next request renders again and
        # must still honour If-None-Match.
        client.post("/api/v1/plugins/etag-other/1.0.0/yank", headers=auth(reg)
                    ).raise_for_status()
        again = client.get("/simple/etag-app/", headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.headers["etag"] == etag
        # A 304 says how long the client's copy is fresh again, as the 200 did.
        assert again.headers["cache-control"] == first.headers["cache-control"]
        cached = client.get("/simple/etag-app/", headers={"If-None-Match": f'W/{etag}, "x"'})
        assert cached.status_code == 304
        assert cached.headers["cache-control"] == first.headers["cache-control"]
        assert client.get("/simple/etag-app/", headers={"If-None-Match": "*"}).status_code == 304
        assert client.get("/simple/etag-app/", headers={"If-None-Match": '"x"'}
                          ).status_code == 200
        wheel = "/files/etag-app/etag_app-1.0.0-py3-none-any.whl"
        for _ in range(2):  # from disk, then from memory
            got = client.get(wheel)
            assert got.status_code == 200 and got.headers["etag"].strip('"') == \
                client.get("/api/v1/plugins/etag-app").json()["versions"][0]["files"][0][
                    "sha256"]
            assert client.get(wheel, headers={"If-None-Match": got.headers["etag"]}
                              ).status_code == 304
        ranged = client.get(wheel, headers={"Range": "bytes=0-9"})
        assert ranged.status_code == 206 and len(ranged.content) == 10
        not_allowed = client.delete("/simple/etag-app/")
        assert not_allowed.status_code == 405 and "GET" in not_allowed.headers["allow"]
        assert client.put("/api/v1/upload").headers["allow"] == "POST"
        spec = client.get("/api/v1/openapi.json").json()
        params = {p["name"]: p["schema"] for p in spec["paths"]["/api/v1/plugins"]["get"][
            "parameters"]}
        for value in params["sort"]["enum"]:
            assert client.get("/api/v1/plugins", params={"sort": value}).status_code == 200
        assert "" not in params["sort"]["enum"]
        assert client.get("/api/v1/plugins", params={"sort": ""}).status_code == 400
        for value in params["kind"]["enum"]:
            assert client.get("/api/v1/plugins", params={"kind": value}).status_code == 200
        owner_schema = spec["paths"]["/api/v1/plugins/{name}/owners"]["post"]["requestBody"][
            "content"]["application/json"]["schema"]["properties"]["owner"]
        assert owner_schema["minLength"] == 1
        empty = client.post("/api/v1/plugins/etag-app/owners", json={"owner": ""},
                            headers=auth(reg))
        assert empty.status_code == 400
        for path, methods in spec["paths"].items():
            concrete = path.replace("{name}", "etag-app").replace("{version}", "1.0.0") \
                .replace("{owner}", "nobody").replace("{prefix}", "p2ph_xxxxxxx")
            for method in methods:
                answered = client.request(method.upper(), concrete)
                assert answered.status_code != 405, (method, path)


# 8 -------------------------------------------------------------------------------------------

def test_operator_and_publisher_tools(reg: Registry, tmp_path: Path) -> None:
    links = ("License-Expression: MIT\nHome-page: https://example.org/linky\n"
             "Project-URL: Source, https://git.example.org/linky\n"
             "Project-URL: Evil, javascript:alert(1)\n")
    assert send(reg, make_wheel(tmp_path, "linky-app", "1.0.0", metadata_extra=links)
                ).status_code == 201
    assert send(reg, make_wheel(tmp_path, "other-app", "1.0.0")).status_code == 201
    with reg.client() as client:
        page = client.get("/plugins/linky-app").text
        assert "MIT" in page and 'href="https://git.example.org/linky"' in page
        assert 'href="https://example.org/linky"' in page and "javascript:" not in page
        assert "unsigned" in page
        assert 'class="downloads">0</td>' in page
        pypi = client.get("/pypi/Linky_App/json", follow_redirects=True).json()
        assert pypi["info"]["name"] == "linky-app" and pypi["info"]["version"] == "1.0.0"
        assert pypi["info"]["license"] == "MIT"
        assert pypi["info"]["project_urls"] == {"Homepage": "https://example.org/linky",
                                                "Source": "https://git.example.org/linky"}
        assert list(pypi["releases"]) == ["1.0.0"]
        assert pypi["urls"][0]["digests"]["sha256"]
        assert client.get("/pypi/linky-app/1.0/json").json()["info"]["version"] == "1.0.0"
        # Tools ask by distribution name: p2phost-jsonny carries the plugin jsonny.
        toml = ('[project.entry-points."p2phost.plugins"]\njsonny = "jsonny"\n\n'
                + PLUGIN_TOML.format(kind="app", host_api=">=1.0,<2"))
        assert send(reg, make_wheel(tmp_path, "p2phost-jsonny", "1.0.0", plugin_toml=toml)
                    ).status_code == 201
        by_distribution = client.get("/pypi/p2phost-jsonny/json").json()
        assert by_distribution["info"]["name"] == "p2phost-jsonny"
        assert by_distribution["info"]["package_url"].endswith("/plugins/jsonny")
        assert client.get("/pypi/jsonny/json").json() == by_distribution
        # The metadata sidecar is served under its own plugin's path only.
        own = "/files/linky-app/linky_app-1.0.0-py3-none-any.whl.metadata"
        assert "Name: linky-app" in client.get(own).text
        assert client.get(own.replace("/linky-app/", "/other-app/")).status_code == 404
    data = str(reg.data)
    # unyank in the CLI
    yank = p2phost("plugin", "yank", "linky-app", "1.0", "--registry", reg.url,
                   "--token", reg.token("pat"))
    assert yank.returncode == 0, yank.stderr
    unyank = p2phost("plugin", "unyank", "linky-app", "1.0", "--registry", reg.url,
                     "--token", reg.token("pat"))
    assert unyank.returncode == 0, unyank.stderr
    assert "unyanked linky-app 1.0.0" in unyank.stdout
    assert reg.client().get("/api/v1/plugins/linky-app/1.0.0").json()["yanked"] is False
    # owners: add then remove, never the last
    added = p2phost("registry", "owner", "add", "linky-app", "sam", "--registry", reg.url,
                    "--token", reg.token("pat"))
    assert added.returncode == 0 and "pat, sam" in added.stdout, added.stderr
    removed = p2phost("registry", "owner", "remove", "linky-app", "sam", "--registry",
                      reg.url, "--token", reg.token("pat"))
    assert removed.returncode == 0 and "owners of linky-app: pat" in removed.stdout
    last = p2phost("registry", "owner", "remove", "linky-app", "pat", "--registry", reg.url,
                   "--token", reg.token("pat"))
    assert last.returncode != 0 and "last owner" in last.stderr
    # tokens: list, expire, revoke (operator, on the store)
    created = p2phost("registry", "token", "create", "--data", data, "--owner", "tess")
    secret = created.stdout.split()[-1]
    listed = p2phost("registry", "token", "list", "--data", data, "--owner", "tess")
    assert secret[:12] in listed.stdout and "active" in listed.stdout
    assert secret not in listed.stdout
    headers = {"Authorization": f"Bearer {secret}"}
    with reg.client() as client:
        mine = client.get("/api/v1/tokens", headers=headers).json()
        assert [t["prefix"] for t in mine["tokens"]] == [secret[:12]]
        expired = p2phost("registry", "token", "expire", secret[:12], "--data", data)
        assert expired.returncode == 0, expired.stderr
        refused = client.get("/api/v1/tokens", headers=headers)
        assert refused.status_code == 401 and "expired" in refused.json()["error"]
        other = p2phost("registry", "token", "create", "--data", data, "--owner", "tess")
        second = other.stdout.split()[-1]
        revoked = p2phost("registry", "token", "revoke", second[:12], "--data", data)
        assert revoked.returncode == 0 and "revoked" in revoked.stdout
        refused = client.get("/api/v1/tokens", headers={"Authorization": f"Bearer {second}"})
        assert refused.status_code == 401 and "revoked" in refused.json()["error"]
    listed = p2phost("registry", "token", "list", "--data", data, "--owner", "tess")
    assert "expired" in listed.stdout and "revoked" in listed.stdout
    # An owner revokes its own token through the API, with the CLI.
    own = p2phost("registry", "token", "create", "--data", data, "--owner", "uma").stdout
    spare = p2phost("registry", "token", "create", "--data", data, "--owner", "uma").stdout
    done = p2phost("registry", "token", "revoke", spare.split()[-1][:12], "--registry",
                   reg.url, "--token", own.split()[-1])
    assert done.returncode == 0, done.stderr
    theirs = p2phost("registry", "token", "revoke", secret[:12], "--registry", reg.url,
                     "--token", own.split()[-1])
    assert theirs.returncode != 0 and "another owner" in theirs.stderr
