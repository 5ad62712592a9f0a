"""The SDK on its own: host-api rule, metadata, config schemas, identities."""

from __future__ import annotations

import asyncio
import contextvars
from pathlib import Path

import pytest

from p2phost_sdk import (
    HOST_API,
    AddressError,
    ConfigError,
    ConfigSchema,
    Identity,
    PluginMetadata,
    PluginMetadataError,
    TraceContext,
    format_host_port,
    host_api_compatible,
    is_peer_id,
    parse_host_port,
    public_key_from_peer_id,
    verify,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "plugins"


def test_host_api_rule() -> None:
    assert str(HOST_API) == "1.1"
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


@pytest.mark.parametrize(("host", "port"), [("127.0.0.1", 7400), ("::1", 0), ("example.org", 1)])
def test_a_host_port_address_reads_back_what_was_written(host: str, port: int) -> None:
    url = format_host_port(host, port, scheme="quic")
    assert url == (f"quic://[{host}]:{port}" if ":" in host else f"quic://{host}:{port}")
    assert parse_host_port(url, scheme="quic") == (host, port)


@pytest.mark.parametrize(("address", "problem"), [
    ("tcp://127.0.0.1", "expected tcp://HOST:PORT"),               # no port
    ("tcp://127.0.0.1:99999", "the port is not 0-65535"),
    ("quic://127.0.0.1:7400", "expected tcp://HOST:PORT"),        # another scheme
    ("tcp://[::1:7400", "Invalid IPv6 URL"),
    # not "the port is not 0-65535" (its port is 7400): the brackets it lacks
    ("tcp://::1:7400", "an IPv6 host goes in brackets: tcp://[::1]:7400"),
    ("tcp://fe80::1", "an IPv6 host goes in brackets: tcp://[fe80::1]:PORT"),
    ("tcp://127.0.0.1:7400/x", "(no path, query or fragment)"),
    ("tcp://127.0.0.1:7400#peer", "(no path, query or fragment)"),
])
def test_a_malformed_host_port_address_names_the_form(address: str, problem: str) -> None:
    with pytest.raises(AddressError) as caught:
        parse_host_port(address, scheme="tcp")
    assert problem in caught.value.problem
    assert caught.value.expected == "tcp://HOST:PORT, e.g. tcp://127.0.0.1:7400"


async def test_a_trace_context_is_carried_into_other_tasks_each_with_its_own_use() -> None:
    current: contextvars.ContextVar[bytes] = contextvars.ContextVar("current", default=b"")
    data = bytes(range(1, 25)) + b"\x01"
    context = TraceContext(data, current.set, current.reset)
    assert context.trace_id == data[:16].hex() and context.sampled
    seen: list[bytes] = []

    async def send(name: bytes) -> None:  # two tasks in it at once, and one nested use
        with context.carry():
            await asyncio.sleep(0)
            with context.carry():
                seen.append(current.get())
            seen.append(current.get())
        seen.append(current.get() or name)

    await asyncio.gather(send(b"a"), send(b"b"))
    assert seen.count(data) == 4 and sorted(set(seen) - {data}) == [b"a", b"b"]
    assert current.get() == b""
