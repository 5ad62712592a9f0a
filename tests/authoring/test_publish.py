"""``plugin build``, ``publish`` and ``yank`` against a real registry process."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import RunningRegistry, run_cli


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("publish") / "pub-test"
    assert run_cli("plugin", "new", "app", "pub-test", "--no-input", "--dir", str(root)
                   ).returncode == 0
    result = run_cli("plugin", "build", str(root), "--no-isolation", timeout=120)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (root / "dist").iterdir()) == [
        "p2phost_pub_test-1.0.0-py3-none-any.whl", "p2phost_pub_test-1.0.0.tar.gz"]
    return root


def _token(registry: RunningRegistry, owner: str, *scopes: str) -> str:
    args = [a for scope in scopes for a in ("--scope", scope)]
    out = run_cli("registry", "token", "create", "--data", str(registry.data), "--owner", owner,
                  *args, check=True).stdout
    return out.split()[-1]


def _versions(registry: RunningRegistry, name: str) -> list[dict]:  # type: ignore[type-arg]
    with urllib.request.urlopen(f"{registry.url}/api/v1/plugins/{name}", timeout=10) as reply:
        return list(json.load(reply)["versions"])


def test_publish_refusals_and_success(built: Path, authoring_registry: RunningRegistry) -> None:
    url = authoring_registry.url
    no_token = run_cli("plugin", "publish", str(built), "--registry", url,
                       env={"P2PHOST_TOKEN": ""})
    assert no_token.returncode == 2
    assert "no registry token" in no_token.stderr and "P2PHOST_TOKEN" in no_token.stderr

    other = _token(authoring_registry, "mallory", "something-else")
    wrong = run_cli("plugin", "publish", str(built), "--registry", url, "--token", other)
    assert wrong.returncode == 2
    assert "refused p2phost_pub_test-1.0.0-py3-none-any.whl (403)" in wrong.stderr
    assert "--scope" in wrong.stderr

    token = _token(authoring_registry, "ada", "pub-test")
    ok = run_cli("plugin", "publish", str(built), "--registry", url,
                 env={"P2PHOST_TOKEN": token})
    assert ok.returncode == 0, ok.stderr
    assert "published p2phost_pub_test-1.0.0-py3-none-any.whl" in ok.stdout
    assert "published p2phost_pub_test-1.0.0.tar.gz" in ok.stdout
    page = ok.stdout.strip().splitlines()[-1].split()[-1]
    assert page == f"{url}/plugins/pub-test/1.0.0"
    with urllib.request.urlopen(page, timeout=10) as reply:
        assert reply.status == 200
    assert [v["version"] for v in _versions(authoring_registry, "pub-test")] == ["1.0.0"]

    again = run_cli("plugin", "publish", str(built / "dist" / "p2phost_pub_test-1.0.0.tar.gz"),
                    "--registry", url, "--token", token)
    assert again.returncode == 2
    assert "(409)" in again.stderr and "raise [project] version" in again.stderr

    yanked = run_cli("plugin", "yank", "pub-test", "1.0.0", "--reason", "greets rudely",
                     "--registry", url, "--token", token)
    assert yanked.returncode == 0, yanked.stderr
    (version,) = _versions(authoring_registry, "pub-test")
    assert version["yanked"] is True and version["yanked_reason"] == "greets rudely"


def test_publish_to_an_unreachable_registry(built: Path) -> None:
    result = run_cli("plugin", "publish", str(built), "--registry", "http://127.0.0.1:9",
                     "--token", "t")
    assert result.returncode == 2
    assert "cannot reach the registry at http://127.0.0.1:9" in result.stderr
    assert "p2phost registry serve" in result.stderr


def test_publish_needs_built_files(tmp_path: Path) -> None:
    assert run_cli("plugin", "new", "app", "unbuilt", "--no-input", "--dir",
                   str(tmp_path / "p")).returncode == 0
    result = run_cli("plugin", "publish", str(tmp_path / "p"), "--token", "t")
    assert result.returncode == 2
    assert "no built files of p2phost-unbuilt 1.0.0" in result.stderr
    assert f"p2phost plugin build {tmp_path / 'p'}" in result.stderr
    (tmp_path / "notes.txt").write_text("x")
    not_a_wheel = run_cli("plugin", "publish", str(tmp_path / "notes.txt"), "--token", "t")
    assert not_a_wheel.returncode == 2 and "is not a wheel or an sdist" in not_a_wheel.stderr


def test_yank_without_a_token(authoring_registry: RunningRegistry) -> None:
    result = run_cli("plugin", "yank", "pub-test", "1.0.0", "--registry",
                     authoring_registry.url, env={"P2PHOST_TOKEN": ""})
    assert result.returncode == 2 and "no registry token" in result.stderr


def test_build_refuses_invalid_metadata(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "1"\n'
                                             "[tool.p2phost.plugin]\nkinds = []\n")
    result = run_cli("plugin", "build", str(tmp_path), "--no-isolation")
    assert result.returncode == 2
    assert "invalid p2phost plugin metadata" in result.stderr
    assert "p2phost plugin check" in result.stderr


def test_build_refuses_a_wheel_without_plugin_metadata(generated: dict[str, Path],
                                                       tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "codec"
    shutil.copytree(generated["codec"], copy, ignore=shutil.ignore_patterns("dist"))
    pyproject = copy / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace(
        '"pyproject.toml" = "p2phost-plugin.toml"', ""))
    result = run_cli("plugin", "build", str(copy), "--no-isolation", timeout=120)
    assert result.returncode == 2
    assert "is not a p2phost plugin wheel" in result.stderr and "extra-metadata" in result.stderr
