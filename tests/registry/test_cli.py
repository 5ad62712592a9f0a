"""`p2phost registry token create` and `p2phost registry seed` as users run them."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx

from ._dists import make_wheel, write_project
from .conftest import start_registry, wait_until


def p2phost(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "p2phost", *args], capture_output=True,
                          text=True, timeout=120, cwd=cwd)


def test_seed_then_serve_then_publish_with_a_cli_token(tmp_path: Path) -> None:
    data = tmp_path / "data"
    projects = [write_project(tmp_path / "src", "seed-transport", "1.0.0"),
                write_project(tmp_path / "src", "seed-codec", "2.0.0", kind="codec")]
    seeded = p2phost("registry", "seed", "--data", str(data), *map(str, projects))
    assert seeded.returncode == 0, seeded.stderr
    assert "4 files published" in seeded.stdout
    again = p2phost("registry", "seed", "--data", str(data), *map(str, projects))
    assert again.returncode == 0 and "0 files published, 4 already there" in again.stdout

    created = p2phost("registry", "token", "create", "--data", str(data), "--owner", "liam",
                      "--scope", "Liam_Plugin")
    assert created.returncode == 0, created.stderr
    token = created.stdout.split()[-1]
    assert "liam" in created.stdout and token.startswith("p2ph_")

    server = start_registry(data)
    try:
        with server.client() as client:
            info = client.get("/api/v1/plugins/seed-transport").json()
            assert info["owners"] == ["p2phost"]
            assert {f["packagetype"] for f in info["versions"][0]["files"]} == {
                "bdist_wheel", "sdist"}
            wheel = make_wheel(tmp_path, "liam-plugin", "0.1.0")
            response = client.post("/api/v1/upload",
                                   files={"file": (wheel.name, wheel.read_bytes())},
                                   headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 201, response.text
            # Seeding while the server runs: the server notices within its watch interval.
            extra = write_project(tmp_path / "src", "late-transport", "1.0.0")
            assert p2phost("registry", "seed", "--data", str(data), str(extra)).returncode == 0
            for _ in range(40):
                if client.get("/api/v1/plugins/late-transport").status_code == 200:
                    break
                time.sleep(0.1)
            assert client.get("/api/v1/plugins/late-transport").status_code == 200
    finally:
        server.stop()


def test_user_errors_are_one_clear_line(tmp_path: Path) -> None:
    empty = tmp_path / "not-a-project"
    empty.mkdir()
    seed = p2phost("registry", "seed", "--data", str(tmp_path / "d"), str(empty))
    assert seed.returncode != 0
    assert "no pyproject.toml" in seed.stdout + seed.stderr
    bad_owner = p2phost("registry", "token", "create", "--data", str(tmp_path / "d"),
                        "--owner", "no spaces please")
    assert bad_owner.returncode != 0
    assert "owner 'no spaces please'" in bad_owner.stderr
    assert "Traceback" not in bad_owner.stderr
    bad_db = p2phost("registry", "token", "create", "--data", str(tmp_path / "d"),
                     "--owner", "x", "--database", "mysql://nope")
    assert bad_db.returncode != 0 and "unsupported URL" in bad_db.stderr
    assert "Traceback" not in bad_db.stderr


def test_serve_with_workers_on_one_store(tmp_path: Path) -> None:
    server = start_registry(tmp_path / "data", None, "--workers", "2")
    try:
        wheel = make_wheel(tmp_path, "worker-app", "1.0.0")
        token = server.token("wes")
        with server.client() as client:
            for _ in range(8):  # prime every worker's cache with the empty index
                assert "worker-app" not in client.get("/simple/").text
            created = client.post("/api/v1/upload",
                                  files={"file": (wheel.name, wheel.read_bytes())},
                                  headers={"Authorization": f"Bearer {token}"})
            assert created.status_code == 201, created.text

        def every_worker_lists_it() -> bool:
            # New connections spread over the workers; each must serve the new plugin.
            return all("worker-app" in httpx.get(server.url + "/simple/").text
                       for _ in range(8))

        wait_until("every worker serves the new plugin", every_worker_lists_it)
    finally:
        server.stop()
    assert server.proc.returncode == 0


def test_a_watch_interval_of_zero_is_a_usage_error(tmp_path: Path) -> None:
    done = p2phost("registry", "serve", "--port", "0", "--data", str(tmp_path / "data"),
                   "--watch-interval", "0")
    assert done.returncode == 2, done.stderr
    assert "--watch-interval" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "data").exists()  # refused before anything was made
