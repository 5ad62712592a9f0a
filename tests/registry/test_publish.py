"""Publishing, the JSON API, ownership and yanking, against the real server on both back ends."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from .conftest import Registry, wait_until


def upload(reg: Registry, path: Path, token: str | None, **extra: bytes) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    files = {"file": (path.name, path.read_bytes(), "application/octet-stream")}
    files.update({k: (k, v, "application/octet-stream") for k, v in extra.items()})
    with reg.client() as client:
        return client.post("/api/v1/upload", files=files, headers=headers)


def test_publish_then_read_everything_back(registry: Registry, built: dict[str, Path]) -> None:
    token = registry.token("alice")
    for filename in ("demo_transport-1.0.0-py3-none-any.whl", "demo_transport-1.0.0.tar.gz",
                     "demo_transport-1.1.0-py3-none-any.whl"):
        sig = {"signature": b"-----SIG-----"} if filename.endswith("1.1.0-py3-none-any.whl") else {}
        response = upload(registry, built[filename], token, **sig)
        assert response.status_code == 201, response.text
    assert response.json() == {
        "name": "demo-transport", "version": "1.1.0",
        "filename": "demo_transport-1.1.0-py3-none-any.whl",
        "url": "/plugins/demo-transport/1.1.0",
    }
    with registry.client() as client:
        info = client.get("/api/v1/plugins/Demo_Transport").json()
        assert info["name"] == "demo-transport"
        assert info["owners"] == ["alice"]
        assert [v["version"] for v in info["versions"]] == ["1.1.0", "1.0.0"]
        newest = info["versions"][0]
        assert newest["kinds"] == ["transport"]
        assert newest["host_api"] == ">=1.0,<2"
        assert newest["capabilities"] == ["connect"]
        assert newest["provides"] == {"schemes": ["demo"]}
        assert newest["yanked"] is False and newest["yanked_reason"] is None
        assert newest["uploaded"].endswith("Z")
        (wheel,) = newest["files"]
        assert wheel["packagetype"] == "bdist_wheel"
        assert wheel["size"] == built[wheel["filename"]].stat().st_size
        assert wheel["signature_url"] == wheel["url"] + ".sig"
        assert client.get(wheel["signature_url"]).content == b"-----SIG-----"
        downloaded = client.get(wheel["url"]).content
        assert downloaded == built[wheel["filename"]].read_bytes()
        import hashlib

        assert hashlib.sha256(downloaded).hexdigest() == wheel["sha256"]
        wait_until("the download counted", lambda: client.get(
            "/api/v1/plugins/demo-transport").json()["downloads"] == 1)
        assert client.get("/api/v1/plugins/demo-transport").json()["versions"][0][
            "downloads"] == 1
        older = client.get("/api/v1/plugins/demo-transport/1.0.0").json()
        assert {f["packagetype"] for f in older["files"]} == {"bdist_wheel", "sdist"}
        missing = client.get("/api/v1/plugins/demo-transport/9.9")
        assert missing.status_code == 404 and "1.1.0" in missing.json()["error"]
        again = upload(registry, built[wheel["filename"]], token, signature=b"other")
        assert again.status_code == 409
        assert client.get(wheel["signature_url"]).content == b"-----SIG-----"
        nope = client.get("/api/v1/plugins/demo-transprt")
        assert nope.status_code == 404
        assert "did you mean demo-transport" in nope.json()["error"]


def test_search_by_text_kind_and_host_api(registry: Registry, built: dict[str, Path]) -> None:
    token = registry.token("carol")
    assert upload(registry, built["demo_codec-1.0.0-py3-none-any.whl"], token).status_code == 201
    with registry.client() as client:
        def names(**params: str) -> list[str]:
            hits = client.get("/api/v1/plugins", params=params).json()["plugins"]
            return [h["name"] for h in hits]

        assert "demo-codec" in names(q="codec")
        assert names(q="next host", kind="codec") == ["demo-codec"]
        assert "demo-codec" not in names(host_api="1.0")
        assert "demo-codec" in names(host_api="2.1")
        hit = client.get("/api/v1/plugins", params={"q": "demo-codec"}).json()["plugins"][0]
        assert set(hit) == {"name", "summary", "latest", "kinds", "host_api", "downloads",
                            "updated"}
        bad = client.get("/api/v1/plugins", params={"kind": "teleporter"})
        assert bad.status_code == 400 and "transport" in bad.json()["error"]


def test_tokens_owners_and_scopes(registry: Registry, tmp_path: Path) -> None:
    from ._dists import make_wheel

    first = make_wheel(tmp_path, "owned-thing", "1.0.0")
    second = make_wheel(tmp_path, "owned-thing", "1.1.0")
    assert upload(registry, first, None).status_code == 401
    wrong = upload(registry, first, "p2ph_not-a-real-token")
    assert wrong.status_code == 401 and "token create" in wrong.json()["error"]
    scoped = upload(registry, first, registry.token("dave", "something-else"))
    assert scoped.status_code == 403 and "--scope owned-thing" in scoped.json()["error"]
    assert upload(registry, first, registry.token("dave", "owned-thing")).status_code == 201
    other = upload(registry, second, registry.token("mallory"))
    assert other.status_code == 403 and "owned by dave" in other.json()["error"]
    with registry.client() as client:
        auth = {"Authorization": f"Bearer {registry.token('mallory')}"}
        denied = client.post("/api/v1/plugins/owned-thing/owners", json={"owner": "mallory"},
                             headers=auth)
        assert denied.status_code == 403
        added = client.post(
            "/api/v1/plugins/owned-thing/owners", json={"owner": "erin"},
            headers={"Authorization": f"Bearer {registry.token('dave')}"},
        )
        assert added.status_code == 200 and added.json()["owners"] == ["dave", "erin"]
    assert upload(registry, second, registry.token("erin")).status_code == 201
    with registry.client() as client:
        malformed = client.post("/api/v1/plugins/owned-thing/owners", content=b"{nope",
                                headers={"Authorization": f"Bearer {registry.token('dave')}"})
        assert malformed.status_code == 400
    log = registry.client().get("/api/v1/plugins/owned-thing/audit").json()["entries"]
    assert [(e["action"], e["actor"]) for e in log] == [
        ("create", "dave"), ("publish", "dave"), ("add-owner", "dave"), ("publish", "erin"),
    ]


def test_yank_and_unyank_with_reason(registry: Registry, tmp_path: Path) -> None:
    from ._dists import make_wheel

    token = registry.token("frank")
    assert upload(registry, make_wheel(tmp_path, "yanky", "1.0.0"), token).status_code == 201
    auth = {"Authorization": f"Bearer {token}"}
    json_accept = {"Accept": "application/vnd.pypi.simple.v1+json"}
    with registry.client() as client:
        r = client.post("/api/v1/plugins/yanky/1.0.0/yank", json={"reason": "broken <b>"},
                        headers=auth)
        assert r.status_code == 200
        version = client.get("/api/v1/plugins/yanky/1.0.0").json()
        assert version["yanked"] is True and version["yanked_reason"] == "broken <b>"
        page = client.get("/simple/yanky/", headers=json_accept).json()
        assert page["files"][0]["yanked"] == "broken <b>"
        html = client.get("/simple/yanky/").text
        assert 'data-yanked="broken &lt;b&gt;"' in html
        not_owner = client.post("/api/v1/plugins/yanky/1.0.0/unyank",
                                headers={"Authorization": f"Bearer {registry.token('gina')}"})
        assert not_owner.status_code == 403
        assert client.post("/api/v1/plugins/yanky/1.0.0/unyank", headers=auth).status_code == 200
        page = client.get("/simple/yanky/", headers=json_accept).json()
        assert page["files"][0]["yanked"] is False
        assert client.post("/api/v1/plugins/yanky/7.0/yank", headers=auth).status_code == 404
    actions = [e.action for e in registry.store().audit_log("yanky")]
    assert actions == ["create", "publish", "yank", "unyank"]


def test_concurrent_publishes_of_one_new_version(registry: Registry, tmp_path: Path) -> None:
    from ._dists import make_wheel

    wheel = make_wheel(tmp_path, "racer", "1.0.0", readme="x" * 200_000)
    token = registry.token("henry")
    body = wheel.read_bytes()

    async def race() -> list[int]:
        async with httpx.AsyncClient(base_url=registry.url, timeout=30) as client:
            responses = await asyncio.gather(*(
                client.post("/api/v1/upload", files={"file": (wheel.name, body)},
                            headers={"Authorization": f"Bearer {token}"})
                for _ in range(6)
            ))
        return sorted(r.status_code for r in responses)

    assert asyncio.run(race()) == [201, 409, 409, 409, 409, 409]
    info = registry.client().get("/api/v1/plugins/racer").json()
    assert len(info["versions"]) == 1 and len(info["versions"][0]["files"]) == 1
    assert list((registry.data / "tmp").iterdir()) == []
