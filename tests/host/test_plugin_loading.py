"""The plugin manager against real installed distributions (wheels built from fixtures)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from p2phost._errors import ManifestError, PluginLoadError
from p2phost._plugins import PluginManager
from p2phost._project import Project
from tests.conftest import write_project

Make = Callable[..., Project]


@pytest.fixture
def project(tmp_path: Path, fixture_wheels: dict[str, Path]) -> Iterator[Make]:
    """A project declaring ``declared`` with the fixture plugins ``installed``."""
    saved_path = list(sys.path)
    saved_modules = set(sys.modules)
    # In-process nodes of earlier tests left their plugin environments on sys.path; this
    # test's project must see only its own plugins (and the host venv's).
    sys.path[:] = [entry for entry in sys.path if ".p2phost" not in Path(entry).parts]

    def make(declared: dict[str, str] | list[str], installed: list[str],
             config: dict[str, dict[str, Any]] | None = None) -> Project:
        root = write_project(tmp_path / "p", declared, config=config,
                             wheels=[fixture_wheels[n] for n in installed])
        return Project(root)

    yield make
    # Loading imports plugin modules from the project's environment: undo that.
    sys.path[:] = saved_path
    for name in set(sys.modules) - saved_modules:
        del sys.modules[name]


def test_loads_declared_plugin_with_config(project: Make) -> None:
    p = project({"hello-app": ">=1.0"}, ["hello-app", "needs-hello"],
                config={"hello-app": {"greeting": "hi"}})
    loaded = PluginManager(p).load()
    assert [x.metadata.name for x in loaded.plugins] == ["hello-app"]  # not needs-hello
    assert loaded.plugins[0].config == {"greeting": "hi", "times": 1}
    parts = loaded.build("peer", 1024)
    assert [type(a).name for a in parts.apps] == ["hello"]
    assert parts.apps[0].greeting == "hi"  # type: ignore[attr-defined]


def test_required_plugins_load_first(project: Make) -> None:
    loaded = PluginManager(project(["needs-hello"], ["hello-app", "needs-hello"])).load()
    assert [(x.metadata.name, x.declared) for x in loaded.plugins] == [
        ("hello-app", False), ("needs-hello", True)]


@pytest.mark.parametrize(
    ("declared", "installed", "message", "fix"),
    [
        (["echo"], [], "plugin 'echo' (declared at p2phost.toml:6) is not installed",
         "p2phost plugin install echo"),
        ({"hello-app": ">=2"}, ["hello-app"],
         "p2phost.toml declares hello-app>=2, but hello-app 1.2.0 is installed",
         "p2phost plugin install 'hello-app>=2'"),
        (["needs-hello"], ["needs-hello"],
         "plugin 'hello-app' (required by 'needs-hello') is not installed",
         "p2phost plugin install 'hello-app>=1.0'"),
        (["future-plugin"], ["future-plugin"],
         "plugin future-plugin 1.2.0 needs host-api >=2.0, this host is 1.1",
         "p2phost plugin install future-plugin"),
        (["cycle-a"], ["cycle-a", "cycle-b"], "plugin dependency cycle: cycle-", "remove one"),
        (["broken-import"], ["broken-import"],
         "plugin 'broken-import' failed to import (broken_import): ModuleNotFoundError",
         "--debug"),
        (["bad-hook"], ["bad-hook"], "plugin 'bad-hook' has a bad hook", "upgrade"),
    ],
)
def test_each_problem_is_one_clear_error(project: Make, declared: Any, installed: list[str],
                                         message: str, fix: str) -> None:
    with pytest.raises(PluginLoadError) as info:
        PluginManager(project(declared, installed)).load()
    assert message in info.value.message
    assert info.value.fix is not None and fix in info.value.fix


def test_bad_config_points_at_the_line(project: Make) -> None:
    p = project(["hello-app"], ["hello-app"], config={"hello-app": {"greeting": 3}})
    with pytest.raises(ManifestError) as info:
        PluginManager(p).load()
    assert info.value.line == 9
    assert "config.hello-app.greeting: expected str, got 3" in str(info.value)


def test_problems_lists_everything_without_importing(project: Make) -> None:
    p = project(["echo", "future-plugin", "broken-import"], ["future-plugin", "broken-import"])
    problems = PluginManager(p).problems()
    assert len(problems) == 2  # broken-import only fails when imported
    assert "broken_import" not in sys.modules
