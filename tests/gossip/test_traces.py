"""A gossip message is one trace: four traced nodes in a line (a - b - c - d, so the
message is forwarded at every hop), each exporting its spans to its own jsonl file. The
publish is the root on a; every hop's receive, handle and forward nest in order below
it, on every node, with one trace id."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from p2phost._runtime import Node
from p2phost_sdk.testing.discovery import wait_until
from tests.discovery.plugins import use_plugin_source
from tests.runtime.conftest import MakeNode
from tests.runtime.conftest import make_node as make_node  # the fixture

use_plugin_source("gossip")

from p2phost_gossip import GossipApp, GossipMessage, gossip_of  # noqa: E402

pytest.importorskip("opentelemetry.sdk.trace")

# d-low 2: b and c graft each other whichever link formed first. (With 1, b grafted to a
# and c to d before they heard of each other's subscription kept a mesh of one each,
# which is within bounds: no heartbeat added the b - c link.)
FAST = {"heartbeat": 0.1, "graft-timeout": 0.05, "d": 2, "d-low": 2, "d-high": 3,
        "require-signatures": False, "topics": ["news"]}


def spans(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def line_of_nodes(make_node: MakeNode, monkeypatch: pytest.MonkeyPatch,
                        files: dict[str, Path]) -> dict[str, Node]:
    """Traced gossip nodes, each connected to the next (a - b - c - d), meshes grafted."""
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "jsonl")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    nodes = {}
    for name, path in files.items():  # each node reads its file's name when it is made
        monkeypatch.setenv("P2PHOST_TRACES_FILE", str(path))
        nodes[name] = await make_node([GossipApp(FAST)], name=name)
    for left, right in itertools.pairwise(nodes.values()):
        await left.connect(right.addresses[0])
    routers = [gossip_of(node.identity.peer_id).router for node in nodes.values()]
    names = {node.identity.peer_id: name for name, node in nodes.items()}
    try:
        await wait_until(
            lambda: [len(r.mesh.get("news", ())) for r in routers] == [1, 2, 2, 1],
            10, "meshes grafted")
    except pytest.fail.Exception:
        state = {name: ({names.get(p, p) for p in r.mesh.get("news", ())},
                        {names.get(p, p): t for p, t in r.peers.items()},
                        {(t, names.get(p, p)): round(b, 1) for (t, p), b in r._backoff.items()},
                        dict(r.counters))
                 for name, r in zip(nodes, routers, strict=True)}
        pytest.fail(f"meshes not grafted within 10 s: {state}")
    return nodes


@pytest.mark.parametrize("kind", ["tcp"])
async def test_a_gossip_message_is_one_trace_across_every_hop(
        make_node: MakeNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = {name: tmp_path / f"{name}.jsonl" for name in "abcd"}
    nodes = await line_of_nodes(make_node, monkeypatch, files)
    got: list[GossipMessage] = []
    gossip_of(nodes["d"].identity.peer_id).subscribe("news", got.append)
    gossip_of(nodes["a"].identity.peer_id).publish("news", "msg 0")
    await wait_until(lambda: bool(got), 10, "the message reached d")
    for node in nodes.values():
        await node.close()  # exports what is queued

    by_node = {name: spans(path) for name, path in files.items()}
    # The user-visible promise: one trace holds the message's spans on every node.
    traces = {name: {s["context"]["trace_id"] for s in found}
              for name, found in by_node.items()}
    shared = set.intersection(*traces.values())
    assert len(shared) == 1, f"no trace spans all four nodes: {traces}"
    (trace_id,) = shared
    ours = {name: {s["name"]: s for s in found if s["context"]["trace_id"] == trace_id}
            for name, found in by_node.items()}
    assert set(ours["a"]) == {"publish news", "send gossip"}
    assert set(ours["b"]) == set(ours["c"]) == {"receive gossip", "handle gossip",
                                                "send gossip"}
    assert set(ours["d"]) == {"receive gossip", "handle gossip"}  # the end of the line
    root = ours["a"]["publish news"]
    assert root["parent_id"] is None and root["kind"] == "SpanKind.PRODUCER"
    chain = [ours["a"]["publish news"], ours["a"]["send gossip"]]
    for name in "bcd":
        chain += [ours[name]["receive gossip"], ours[name]["handle gossip"]]
        if name != "d":
            chain.append(ours[name]["send gossip"])  # the forward: a child of the handler
    for parent, child in itertools.pairwise(chain):
        assert child["parent_id"] == parent["context"]["span_id"], (parent["name"],
                                                                    child["name"])
        assert child["start_time"] >= parent["start_time"], (parent["name"], child["name"])


@pytest.mark.parametrize("kind", ["mem"])
async def test_a_node_that_does_not_trace_gives_no_context(make_node: MakeNode) -> None:
    node = await make_node([GossipApp(FAST)])
    assert node.trace_context() is None
    assert node.trace_context("publish news") is None
    assert gossip_of(node.identity.peer_id).publish("news", 1)  # published untraced


@pytest.mark.parametrize("kind", ["mem"])
@pytest.mark.parametrize("sampler", ["parentbased_always_off", "always_off"])
async def test_a_message_not_sampled_carries_its_context_on_every_hop(
        make_node: MakeNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        sampler: str) -> None:
    # No span anywhere, yet the context travels: a node downstream that decides for
    # itself sees the publisher's (unsampled) trace, not a new one per hop.
    from p2phost._observability._context import current  # the otel extra: tracing only

    monkeypatch.setenv("OTEL_TRACES_SAMPLER", sampler)
    files = {name: tmp_path / f"{name}.jsonl" for name in "abcd"}
    nodes = await line_of_nodes(make_node, monkeypatch, files)
    seen: dict[str, bytes] = {}
    for name in "bcd":
        gossip_of(nodes[name].identity.peer_id).subscribe(
            "news", lambda _, name=name: seen.setdefault(name, current()))
    gossip_of(nodes["a"].identity.peer_id).publish("news", "msg 0")
    await wait_until(lambda: len(seen) == 3, 10, "the message reached b, c and d")
    traces = {name: context[:16] for name, context in seen.items()}
    assert len(set(traces.values())) == 1 and bytes(16) not in traces.values(), traces
    assert not any(context[24] & 1 for context in seen.values())  # not sampled anywhere
