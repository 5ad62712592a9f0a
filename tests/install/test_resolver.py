"""The resolver's rules and messages, on registry answers built in memory (pure unit tests)."""

from __future__ import annotations

import pytest
from packaging.version import Version

from p2phost._install import RegistryClient, Release, RemoteFile, Requirement, resolve
from p2phost._install._registry import PluginInfo
from p2phost._install._resolver import ResolutionError


def release(name: str, version: str, *, host_api: str = ">=1.0,<2", yanked: bool = False,
            requires: dict[str, str] | None = None) -> Release:
    wheel = RemoteFile(f"{name}-{version}-py3-none-any.whl", f"http://r/{name}", "0" * 64)
    return Release(name, Version(version), "http://r", host_api=host_api, yanked=yanked,
                   requires=requires or {}, files=(wheel,))


class Answers(RegistryClient):
    """A client whose registry answers are given up front."""

    def __init__(self, *releases: Release) -> None:
        super().__init__(["http://r"])
        for name in {r.name for r in releases}:
            mine = sorted((r for r in releases if r.name == name), key=lambda r: r.version,
                          reverse=True)
            self._plugins[name] = PluginInfo(name, "http://r", releases=tuple(mine))


def picked(client: RegistryClient, *reqs: str, preferred: dict[str, str] | None = None
           ) -> dict[str, str]:
    parsed = [Requirement.parse(*r.split(" ", 1)) if " " in r else Requirement.parse(r, "*")
              for r in reqs]
    return {r.name: str(r.version) for r in resolve(client, parsed, preferred).releases}


def test_newest_that_fits_everything_and_dependencies_first() -> None:
    client = Answers(release("a", "1.0"), release("a", "1.5"), release("a", "2.0", host_api=">=2"),
                     release("a", "1.6", yanked=True), release("a", "1.7rc1"),
                     release("b", "1.0", requires={"a": ">=1.2"}))
    result = resolve(client, [Requirement.parse("b", "*")])
    assert [(r.name, str(r.version)) for r in result.releases] == [("a", "1.5"), ("b", "1.0")]
    assert picked(client, "a ==1.6") == {"a": "1.6"}  # yanked, but pinned exactly
    assert picked(client, "a >=1.7rc1") == {"a": "1.7rc1"}  # pre-release only when asked


def test_locked_versions_are_kept_unless_upgrading() -> None:
    client = Answers(release("a", "1.0"), release("a", "1.5"))
    assert picked(client, "a *", preferred={"a": "1.0"}) == {"a": "1.0"}
    assert picked(client, "a >1.0", preferred={"a": "1.0"}) == {"a": "1.5"}


def test_backtracks_to_an_older_version_that_agrees() -> None:
    client = Answers(release("a", "1.0"), release("a", "2.0"),
                     release("b", "2.0", requires={"a": ">=2"}), release("b", "1.0"),
                     release("c", "1.0", requires={"a": "<2"}))
    assert picked(client, "b *", "c *") == {"a": "1.0", "b": "1.0", "c": "1.0"}


@pytest.mark.parametrize(("releases", "reqs", "message"), [
    ((release("a", "2.0", host_api=">=2"), release("a", "1.4")), ["a >=2"],
     "a 2.0 needs host-api >=2, this host is 1.1, and a>=2 (requested) allows nothing else; "
     "newest that fits this host: 1.4"),
    ((release("a", "1.0", yanked=True),), ["a *"], "a 1.0 was yanked"),
    ((release("a", "1.0"), release("b", "1.0", requires={"a": ">=2"})), ["b *"],
     "no release of a matches a>=2 (required by b 1.0)"),
    ((release("a", "1.0"), release("a", "2.0"), release("b", "1.0", requires={"a": ">=2"}),
      release("c", "1.0", requires={"a": "<2"})), ["b *", "c *"],
     "conflicting requirements for a: a>=2 (required by b 1.0), a<2 (required by c 1.0)"),
    ((release("x", "1.0", requires={"y": "*"}), release("y", "1.0", requires={"x": "*"})),
     ["x *"], "plugin dependency cycle: "),
])
def test_failures_say_why(releases: tuple[Release, ...], reqs: list[str], message: str) -> None:
    with pytest.raises(ResolutionError) as caught:
        picked(Answers(*releases), *reqs)
    assert message in caught.value.message


def test_a_python_requirement_the_host_cannot_meet_is_refused_not_shadowed() -> None:
    from importlib.metadata import version

    from p2phost._install._pydeps import _refuse_shadowing

    _refuse_shadowing({"name": "surely-not-installed-here", "version": "1.0"}, ["x"])
    with pytest.raises(ResolutionError) as info:
        _refuse_shadowing({"name": "msgpack", "version": "99.0"}, ["msgpack>=99"])
    assert f"this host provides msgpack {version('msgpack')}" in info.value.message
    assert "upgrade msgpack in p2phost's environment (pip install -U msgpack)" in info.value.fix


def test_a_host_package_capped_by_a_dependency_names_the_cap_and_a_downgrade() -> None:
    # As aioquic's pyOpenSSL caps cryptography below the version p2phost's venv has.
    from importlib.metadata import version

    from p2phost._install._pydeps import _refuse_shadowing

    have = version("msgpack")
    planned = [{"name": "capper", "version": "2.0",
                "requires_dist": [f"msgpack<{have}", 'msgpack<0.1; extra == "old"']},
               {"name": "msgpack", "version": "0.0.1"}]
    with pytest.raises(ResolutionError) as info:
        _refuse_shadowing(planned[1], ["wants-capper>=1"], planned)
    assert f"need msgpack 0.0.1 (capper 2.0 requires msgpack<{have}), but this host " \
           f"provides msgpack {have}" in info.value.message
    assert "downgrade msgpack in p2phost's environment (pip install 'msgpack==0.0.1')" \
        in str(info.value.fix)
    assert "-U" not in str(info.value.fix)
