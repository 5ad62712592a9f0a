"""A configured registry that is down, or unavailable behind its proxy (503), must not
block the official plugins, which the built-in source ships; but ``--refresh``, which asks
for the registries' answers, must say it could not have them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.install.conftest import Workspace, hand_made_registry

Make = Callable[..., Workspace]


@pytest.fixture
def unavailable() -> Iterator[str]:
    """A registry's proxy that answers 503 to everything (the registry behind it is down)."""
    with hand_made_registry({}, missing=503) as url:
        yield url


def _configured(ws: Workspace, url: str) -> None:
    (ws.root / "p2phost.toml").write_text(f'[registry]\nurl = "{url}"\n\n' + ws.manifest)


@pytest.mark.parametrize("down", ["refused", "503"])
def test_built_in_plugins_install_with_the_configured_registry_down(
        workspace: Make, builtin_plugins: Path, unavailable: str, down: str) -> None:
    ws = workspace(plugins={"echo": "*"})
    url = "http://127.0.0.1:9" if down == "refused" else unavailable  # 9: nothing listens
    _configured(ws, url)
    env = {"P2PHOST_REGISTRY": "", "P2PHOST_BUILTIN_DIR": str(builtin_plugins),
           "P2PHOST_TIMEOUT": "2"}
    done = ws.cli("plugin", "install", "--yes", env=env)
    assert done.returncode == 0, done.stderr
    assert f"warning: {url} did not answer" in done.stderr
    assert "fix: start that registry, or remove it from [registry] url in p2phost.toml" \
        in done.stderr
    assert 'source = "built-in"' in ws.lock and "echo" in ws.installed()

    # The lock now satisfies the manifest; --refresh must still ask, and say it could not.
    for replay in ("1", "0"):
        refreshed = ws.cli("plugin", "install", "--yes", "--refresh",
                           env={**env, "P2PHOST_REPLAY": replay})
        assert refreshed.returncode != 0, refreshed.stdout + refreshed.stderr
        assert refreshed.stderr.startswith(f"error: a refresh must ask {url}, and it did not "
                                           "answer"), \
            refreshed.stderr
        assert "\nfix: start that registry" in refreshed.stderr
        assert "nothing to do" not in refreshed.stdout
