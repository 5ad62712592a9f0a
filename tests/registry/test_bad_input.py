"""Every bad upload is refused whole with a clear message, and nothing is stored."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from ._dists import make_sdist, make_wheel
from .conftest import Registry, start_registry

Maker = Callable[[Path], Path]


def _not_a_zip(out: Path) -> Path:
    path = out / "bogus-1.0.0-py3-none-any.whl"
    path.write_bytes(b"this is not a zip file at all")
    return path


def _renamed(out: Path) -> Path:
    real = make_wheel(out, "renamed", "1.0.0")
    return real.rename(out / "renamed-2.0.0-py3-none-any.whl")


def _oversized(out: Path) -> Path:
    return make_wheel(out, "huge", "1.0.0", extra={"huge/blob.bin": os.urandom(200_000)})


def _far_oversized(out: Path) -> Path:
    # Over the limit plus the form's slack: refused from Content-Length, body unread.
    return make_wheel(out, "huger", "1.0.0", extra={"huger/blob.bin": os.urandom(1_000_000)})


def _rewrite_members(out: Path) -> Path:
    path = out / "sneaky-1.0.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("../../etc/cron.d/evil", b"* * * * * root sh")
    return path


CASES: list[tuple[str, Maker, int, str]] = [
    ("not a wheel", _not_a_zip, 400, "not a zip archive"),
    ("dot-dot path", lambda o: make_wheel(o, "dotdot", "1.0.0", extra={"../evil.py": b"x"}),
     400, "outside the archive root"),
    ("zip with ../ only", _rewrite_members, 400, "outside the archive root"),
    ("absolute path", lambda o: make_wheel(o, "absolute", "1.0.0", extra={"/etc/x": b"x"}),
     400, "absolute path"),
    ("symlink in wheel", lambda o: make_wheel(o, "linky", "1.0.0", symlink="passwd"),
     400, "symlink"),
    ("symlink in sdist", lambda o: make_sdist(o, "linky-sdist", "1.0.0", link=True),
     400, "is a link"),
    ("name disagrees", lambda o: make_wheel(o, "honest", "1.0.0", meta_name="other-name"),
     400, "Name: other-name"),
    ("version disagrees", _renamed, 400, "says version 2.0.0"),
    ("no plugin metadata", lambda o: make_wheel(o, "plain-lib", "1.0.0", plugin_toml=""),
     400, "no p2phost-plugin.toml"),
    ("bad kind", lambda o: make_wheel(
        o, "bad-kind", "1.0.0", plugin_toml='[tool.p2phost.plugin]\nkinds = ["teleporter"]\n'
        'host-api = ">=1.0"\n'), 400, "unknown kind 'teleporter'"),
    ("bad host-api", lambda o: make_wheel(
        o, "bad-api", "1.0.0", plugin_toml='[tool.p2phost.plugin]\nkinds = ["app"]\n'
        'host-api = "one point oh"\n'), 400, "host-api"),
    ("script in README", lambda o: make_wheel(
        o, "scripty", "1.0.0", readme="Hello <script>alert(1)</script>"), 400, "<script>"),
    ("not a distribution", lambda o: (o / "notes.txt", (o / "notes.txt").write_text("x"))[0],
     400, "only wheels"),
    ("oversized", _oversized, 413, "limit"),
    ("far oversized", _far_oversized, 413, "accepts"),
]


@pytest.fixture(scope="module")
def small_registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    server = start_registry(tmp_path_factory.mktemp("bad"), None, "--max-upload-mb", "0.1")
    yield server  # type: ignore[misc]
    server.stop()


@pytest.mark.parametrize(("label", "maker", "status", "needle"), CASES, ids=[c[0] for c in CASES])
def test_refused_and_nothing_stored(
    small_registry: Registry, tmp_path: Path, label: str, maker: Maker, status: int, needle: str,
) -> None:
    path = maker(tmp_path)
    token = small_registry.token("tester")
    with small_registry.client() as client:
        response = client.post(
            "/api/v1/upload", files={"file": (path.name, path.read_bytes())},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == status, response.text
        assert needle in response.json()["error"], response.json()
        assert client.get("/simple/").text.count("<a ") == 0
    assert list((small_registry.data / "files").rglob("*")) == []
    assert list((small_registry.data / "tmp").iterdir()) == []


def test_malformed_form_data(small_registry: Registry) -> None:
    auth = {"Authorization": f"Bearer {small_registry.token('tester')}"}
    with small_registry.client() as client:
        broken = client.post(
            "/api/v1/upload", content=b"--xyz\r\nContent-Disposition: form-data\r\n\r\nnope",
            headers={**auth, "Content-Type": "multipart/form-data; boundary=xyz"},
        )
        assert broken.status_code == 400
        assert "multipart" in broken.json()["error"] or "missing" in broken.json()["error"]
        no_file = client.post("/api/v1/upload", data={"x": "1"}, headers=auth)
        assert no_file.status_code == 400 and "`file`" in no_file.json()["error"]
        not_json = client.post("/api/v1/plugins/x/1.0/yank", content=b"[1,2", headers=auth)
        assert not_json.status_code == 400
        wrong_action = client.post("/legacy/", data={":action": "submit"}, headers=auth)
        assert wrong_action.status_code == 400 and "file_upload" in wrong_action.json()["error"]


def test_duplicate_file_and_lookalike_names(small_registry: Registry, tmp_path: Path) -> None:
    def send(path: Path, owner: str) -> httpx.Response:
        with small_registry.client() as client:
            return client.post(
                "/api/v1/upload", files={"file": (path.name, path.read_bytes())},
                headers={"Authorization": f"Bearer {small_registry.token(owner)}"},
            )

    original = make_wheel(tmp_path, "requests-transport", "1.0.0")
    assert send(original, "ivan").status_code == 201
    again = send(original, "ivan")
    assert again.status_code == 409 and "immutable" in again.json()["error"]
    (tmp_path / "v2").mkdir()
    differently_cased = make_wheel(tmp_path / "v2", "Requests_Transport", "1.0.0",
                                   filename="Requests_Transport-1.0.0-py3-none-any.whl")
    refused = send(differently_cased, "ivan")
    assert refused.status_code == 400 and "normalised distribution name" in refused.text
    for lookalike in ("requests-transp0rt", "reqeusts-transport", "requests.transport1"):
        response = send(make_wheel(tmp_path, lookalike, "1.0.0"), "judy")
        assert response.status_code == 409, (lookalike, response.text)
        assert "too close to the existing plugin 'requests-transport'" in response.json()["error"]
    # The owner of a name may publish close names, and clearly different names pass.
    assert send(make_wheel(tmp_path, "requests-transports", "1.0.0"), "ivan").status_code == 201
    assert send(make_wheel(tmp_path, "quic-transport", "1.0.0"), "judy").status_code == 201
