"""The SDK on its own: host-api rule, metadata, config schemas, identities."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2phost_sdk import (
    HOST_API,
    ConfigError,
    ConfigSchema,
    Identity,
    PluginMetadata,
    PluginMetadataError,
    host_api_compatible,
    is_peer_id,
    public_key_from_peer_id,
    verify,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "plugins"


def test_host_api_rule() -> None:
    assert str(HOST_API) == "1.0"
    assert host_api_compatible(">=1.0,<2")
    assert not host_api_compatible(">=2")
    assert not host_api_compatible("not a specifier")


def test_metadata_from_pyproject() -> None:
    meta = PluginMetadata.from_pyproject(FIXTURES / "hello-app")
    assert (meta.name, meta.version, meta.kinds) == ("hello-app", "1.2.0", ("app",))
    assert [f.name for f in meta.config.fields] == ["greeting", "times"]
    assert PluginMetadata.from_table("x", "1", meta.to_table(), source="t") == \
        PluginMetadata.from_table("x", "1", meta.to_table(), source="t")


def test_metadata_lists_every_problem() -> None:
    with pytest.raises(PluginMetadataError) as info:
        PluginMetadata.from_table(
            "bad name!", "one", {"kinds": ["teleport"], "host-api": "~~1", "colour": 1,
                                 "requires": {"x": ">>"}, "capabilities": ["fly"],
                                 "config": {"a": {"type": "complex"}}},
            source="pyproject.toml",
        )
    text = str(info.value)
    for needle in ("name", "version", "teleport", "host-api", "colour", "requires.x", "fly",
                   "config.a.type"):
        assert needle in text, needle
    assert len(info.value.problems) == 8


def test_metadata_from_wheel(fixture_wheels: dict[str, Path]) -> None:
    meta = PluginMetadata.from_wheel(fixture_wheels["needs-hello"])
    assert meta.requires == {"hello-app": ">=1.0"}
    assert meta.summary == "A test plugin: needs-hello"


def test_config_schema_errors_name_field_expected_and_got() -> None:
    schema = ConfigSchema.from_table({
        "peers": {"type": "list[str]", "default": []},
        "port": {"type": "int", "required": True},
        "interval": "float",
    })
    assert schema.validate({"port": 1}, "p") == {"peers": [], "port": 1, "interval": None}
    problems = schema.problems({"peers": [1], "port": True, "colour": "red"}, "p")
    assert [(e.field, e.expected) for e in problems] == [
        ("peers", "list[str]"), ("port", "int"),
        ("colour", "a known field (one of interval, peers, port)"),
    ]
    with pytest.raises(ConfigError, match=r"\[config.p\] port: expected int \(required\)"):
        schema.validate({}, "p")


def test_identity_and_peer_ids() -> None:
    a = Identity.generate()
    assert is_peer_id(a.peer_id) and len(a.peer_id) == 52
    assert public_key_from_peer_id(a.peer_id) == a.public_key
    assert Identity.from_seed(a.seed).peer_id == a.peer_id
    sig = a.sign(b"data")
    assert verify(a.peer_id, sig, b"data")
    assert not verify(a.peer_id, sig, b"other")
    assert not verify(Identity.generate().peer_id, sig, b"data")
    assert not is_peer_id("hello") and not is_peer_id(a.peer_id.upper())
