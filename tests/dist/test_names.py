"""Plugin names and their distributions (``p2phost-<plugin>``): SDK, registry and installer."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2phost._install._errors import IntegrityError
from p2phost._install._wheels import check_sdk, python_requirements
from p2phost_registry import Store
from p2phost_registry._errors import Conflict
from p2phost_registry._records import Actor
from p2phost_sdk import PluginMetadata
from tests.registry._dists import PLUGIN_TOML, make_wheel

ENTRY = '\n[project.entry-points."p2phost.plugins"]\n{plugin} = "{module}"\n'


def plugin_wheel(out: Path, dist: str, plugin: str, version: str = "1.0.0",
                 requires: str = "") -> Path:
    """A wheel of the distribution ``dist`` carrying the plugin ``plugin``."""
    toml = PLUGIN_TOML.format(kind="app", host_api=">=1.0,<2") \
        + ENTRY.format(plugin=plugin, module=dist.replace("-", "_"))
    wheel = make_wheel(out, dist, version, plugin_toml=toml)
    if requires:
        import zipfile

        with zipfile.ZipFile(wheel) as archive:
            members = {n: archive.read(n) for n in archive.namelist()}
        meta = next(n for n in members if n.endswith("METADATA"))
        head, _, body = members[meta].decode().partition("\n\n")
        members[meta] = f"{head}\nRequires-Dist: {requires}\n\n{body}".encode()
        with zipfile.ZipFile(wheel, "w") as archive:
            for name, data in members.items():
                archive.writestr(name, data)
    return wheel


def test_the_plugin_is_named_by_its_entry_point(tmp_path: Path) -> None:
    meta = PluginMetadata.from_wheel(plugin_wheel(tmp_path, "p2phost-shout", "shout"))
    assert (meta.name, meta.dist_name) == ("shout", "p2phost-shout")
    plain = PluginMetadata.from_wheel(make_wheel(tmp_path, "plain", "1.0.0"))
    assert (plain.name, plain.dist_name) == ("plain", "plain")


def test_the_registry_keeps_one_distribution_per_plugin(tmp_path: Path) -> None:
    store = Store(tmp_path / "data")
    actor = Actor("p2phost")
    try:
        def publish(wheel: Path) -> None:
            copy = store.new_upload_path()
            copy.write_bytes(wheel.read_bytes())
            store.publish(actor, copy, wheel.name)

        (tmp_path / "a").mkdir()
        publish(plugin_wheel(tmp_path / "a", "p2phost-shout", "shout"))
        assert store.distributions() == {"shout": "p2phost-shout"}
        assert store.plugin_of_distribution("p2phost-shout").name == "shout"
        (tmp_path / "b").mkdir()
        with pytest.raises(Conflict, match="carries the plugin shout"):
            publish(plugin_wheel(tmp_path / "b", "p2phost-shout", "whisper"))
        (tmp_path / "c").mkdir()
        with pytest.raises(Conflict, match="published as the distribution p2phost-shout"):
            publish(plugin_wheel(tmp_path / "c", "shout-plugin", "shout", "2.0.0"))
    finally:
        store.close()


def test_a_plugin_needing_a_newer_sdk_is_refused_naming_both_versions(tmp_path: Path) -> None:
    wheel = plugin_wheel(tmp_path, "p2phost-future", "future", requires="p2phost-sdk>=9.0")
    with pytest.raises(IntegrityError) as refused:
        check_sdk("future", "1.0.0", wheel)
    assert "p2phost-sdk>=9.0" in refused.value.message
    assert "this host has p2phost-sdk 1.1.0" in refused.value.message
    assert python_requirements(wheel) == ()  # the host provides the SDK: never installed


def test_scripts_dist_refuses_a_p2phost_wheel_missing_a_built_in_wheel(tmp_path: Path) -> None:
    import importlib.util
    import zipfile

    from tests.conftest import REPO

    spec = importlib.util.spec_from_file_location("_dist", REPO / "scripts" / "_dist.py")
    assert spec is not None and spec.loader is not None
    dist = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dist)
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    for name in ("p2phost_echo-1.0.0-py3-none-any.whl", "p2phost_chat-1.0.0-py3-none-any.whl"):
        (plugins / name).write_bytes(b"wheel")
    host = tmp_path / "p2phost-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(host, "w") as archive:
        archive.writestr("p2phost/_builtin/p2phost_echo-1.0.0-py3-none-any.whl", b"wheel")
        archive.writestr("p2phost/_templates/app/template.toml", b"")
    with pytest.raises(SystemExit, match=r"lacks p2phost/_builtin/p2phost_chat-1\.0\.0"):
        dist.check_host_wheel(host, plugins)
