"""Two `p2phost registry serve` processes on one PostgreSQL database and one data directory:
what happens on one is visible on the other at once, and a race has exactly one winner."""

from __future__ import annotations

import hashlib
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from p2phost_registry import Store

from ._dists import make_wheel
from .conftest import Registry, start_registry, wait_until
from .test_simple_index import run

pytestmark = pytest.mark.services


@dataclass
class Pair:
    a: Registry
    b: Registry


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, pg_schema_factory: Callable[[], str]
         ) -> Iterator[Pair]:
    database = pg_schema_factory()
    data = tmp_path_factory.mktemp("shared")
    # Pages live 60 s and the safety-net poll runs every 10 minutes: within a test, only a
    # LISTEN/NOTIFY invalidation (not expiry, not the poll) can show one server's change on
    # the other.
    slow = ("--page-ttl", "60", "--watch-interval", "600")
    a = start_registry(data, database, *slow)
    b = start_registry(data, database, *slow)
    yield Pair(a, b)
    a.stop()
    b.stop()


def upload(reg: Registry, path: Path, token: str) -> httpx.Response:
    with reg.client() as client:
        return client.post("/api/v1/upload", files={"file": (path.name, path.read_bytes())},
                           headers={"Authorization": f"Bearer {token}"})


def test_change_on_one_is_notified_to_the_other(pair: Pair, tmp_path: Path) -> None:
    import psycopg

    store = Store(pair.a.data, pair.a.database)
    try:
        channel = store.db.channel
    finally:
        store.close()
    assert channel.startswith("p2phost_registry_")
    with psycopg.connect(str(pair.a.database), autocommit=True) as listener, \
            pair.b.client() as client:
        listener.execute(f'LISTEN "{channel}"')
        assert client.get("/simple/").text.count("<a ") == 0  # cached on b
        assert client.get("/simple/notify-app/").status_code == 404
        token = pair.a.token("nina")
        assert upload(pair.a, make_wheel(tmp_path, "notify-app", "1.0.0"), token
                      ).status_code == 201
        assert list(listener.notifies(timeout=5, stop_after=1)), "no NOTIFY after a publish"
        wait_until("b serves the new plugin", lambda: "notify-app" in client.get(
            "/simple/").text, timeout=5)
        assert client.get("/simple/notify-app/").status_code == 200


def test_publish_and_yank_on_one_pip_on_the_other(pair: Pair, tmp_path: Path) -> None:
    token = pair.a.token("olga")
    index = f"{pair.b.url}/simple/"
    with pair.b.client() as client:
        assert client.get("/simple/olga-app/").status_code == 404  # b caches nothing stale
    for version in ("1.0.0", "1.1.0"):
        assert upload(pair.a, make_wheel(tmp_path, "olga-app", version), token
                      ).status_code == 201
    run(sys.executable, "-m", "pip", "install", "--no-cache-dir", "--index-url", index,
        "--target", str(tmp_path / "first"), "olga-app")
    assert (tmp_path / "first" / "olga_app-1.1.0.dist-info").is_dir()
    with pair.a.client() as client:
        client.post("/api/v1/plugins/olga-app/1.1.0/yank", json={"reason": "broken"},
                    headers={"Authorization": f"Bearer {token}"}).raise_for_status()
    run(sys.executable, "-m", "pip", "install", "--no-cache-dir", "--index-url", index,
        "--target", str(tmp_path / "second"), "olga-app")
    assert (tmp_path / "second" / "olga_app-1.0.0.dist-info").is_dir()
    assert not (tmp_path / "second" / "olga_app-1.1.0.dist-info").exists()


def test_token_revoked_on_one_is_refused_by_the_other(pair: Pair) -> None:
    token = pair.a.token("pia")
    headers = {"Authorization": f"Bearer {token}"}
    with pair.a.client() as a, pair.b.client() as b:
        assert b.get("/api/v1/tokens", headers=headers).status_code == 200
        a.post(f"/api/v1/tokens/{token[:12]}/revoke", headers=headers).raise_for_status()
        refused = b.get("/api/v1/tokens", headers=headers)
        assert refused.status_code == 401 and "revoked" in refused.json()["error"]


def test_concurrent_publish_of_one_file_on_two_servers(pair: Pair, tmp_path: Path) -> None:
    token = pair.a.token("quinn")
    rounds = 6
    for n in range(rounds):
        # Two different builds of one file name, one sent to each server at the same moment.
        for side in "ab":
            (tmp_path / side).mkdir(exist_ok=True)
        paths = [make_wheel(tmp_path / side, "race-app", f"1.0.{n}", readme=f"# {side}\n")
                 for side in "ab"]
        barrier = threading.Barrier(2)
        results: dict[str, int] = {}

        def send(side: str, reg: Registry, path: Path, barrier: threading.Barrier = barrier,
                 results: dict[str, int] = results) -> None:
            barrier.wait(timeout=10)
            results[side] = upload(reg, path, token).status_code

        threads = [threading.Thread(target=send, args=(side, reg, path))
                   for side, reg, path in zip("ab", (pair.a, pair.b), paths, strict=True)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert sorted(results.values()) == [201, 409], results
        winner = paths[0] if results["a"] == 201 else paths[1]
        name = winner.name
        for reg in (pair.a, pair.b):
            with reg.client() as client:
                served = client.get(f"/files/race-app/{name}").content
                listed = client.get(f"/api/v1/plugins/race-app/1.0.{n}").json()["files"]
            assert served == winner.read_bytes()
            assert [f["sha256"] for f in listed] == [hashlib.sha256(served).hexdigest()]
    assert len(list((pair.a.data / "files" / "race-app").iterdir())) == rounds
