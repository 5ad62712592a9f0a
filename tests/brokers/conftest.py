"""Nodes over every medium: projects that differ only in their transport, and the ledger.

A medium is a transport plugin and the URL its nodes listen on; the service behind it
must be up (tests skip, or fail under CI=true, when it is not).
"""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import tomlkit

from tests.conftest import build_wheels, run_cli, service_or_skip, write_project
from tests.runtime.processes import RunningNode, free_port

LEDGER = Path(__file__).resolve().parent / "plugins" / "ledger"


@dataclass(frozen=True)
class Medium:
    """How nodes reach each other: a transport plugin, a listen URL, the service."""

    name: str
    plugin: str
    url: str
    service: tuple[str, int] | None = None
    config: dict[str, Any] = field(default_factory=dict)

    def require(self) -> None:
        """Skip (or fail under CI=true) when the service is down."""
        if self.service is not None:
            service_or_skip(*self.service)


MEDIA = {
    "tcp": Medium("tcp", "tcp-transport", "tcp://127.0.0.1:0"),
    "quic": Medium("quic", "quic-transport", "quic://127.0.0.1:0"),
    "websocket": Medium("websocket", "websocket-transport", "ws://127.0.0.1:0",
                        config={"proxy": ""}),
    "redis": Medium("redis", "redis-transport", "redis://127.0.0.1:6379/0", ("Redis", 6379)),
    "nats": Medium("nats", "nats-transport", "nats://127.0.0.1:4222", ("NATS", 4222)),
    "nats-jetstream": Medium("nats-jetstream", "nats-transport", "nats://127.0.0.1:4222",
                             ("NATS", 4222), {"durable": True}),
    "mqtt": Medium("mqtt", "mqtt-transport", "mqtt://127.0.0.1:1883", ("Mosquitto", 1883)),
    "amqp": Medium("amqp", "amqp-transport", "amqp://guest:guest@127.0.0.1:5672/",
                   ("RabbitMQ", 5672)),
    "postgresql": Medium("postgresql", "postgres-transport", "postgresql://127.0.0.1:5432/test",
                         ("PostgreSQL", 5432)),
}
#: The media with a stream per connection (no inbox on a shared medium).
STREAMS = ["tcp", "quic", "websocket"]
#: The media that hold messages for an absent node and redeliver what it did not finish.
DURABLE = ["redis", "nats-jetstream", "mqtt", "amqp", "postgresql"]


@pytest.fixture(scope="session")
def ledger_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ledger test app, built once."""
    return build_wheels([LEDGER], tmp_path_factory.mktemp("ledger-wheel"))["ledger"]


def without_the_repeat_at_the_kill(got: list[Any]) -> list[Any]:
    """``got`` (a killed node's ledger, in order) without the one repeat the contract allows.

    docs/transports.md: a node killed after a handler's effect but before the journal
    line written right after it handles that one message again when it restarts; so at
    most one entry may repeat, right after itself. Any other repeat fails here."""
    repeats = [i for i in range(1, len(got)) if got[i] == got[i - 1]]
    assert len(repeats) <= 1, f"{len(repeats)} messages handled twice: {repeats[:10]}"
    return got[:repeats[0]] + got[repeats[0] + 1:] if repeats else got


class Ledger:
    """What a node's ledger app has written so far: one JSON object per handled note."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def notes(self) -> list[dict[str, Any]]:
        """Every line so far (a line still being written is left out)."""
        if not self.path.exists():
            return []
        lines = self.path.read_text().split("\n")[:-1]
        return [json.loads(line) for line in lines]

    def entries(self) -> list[dict[str, Any]]:
        """What the app recorded in its store for ``entry`` messages of an acknowledged
        topic, in the order handled: committed with each message's outcome, so a
        message is there once however often its handler ran."""
        database = self.path.parent / ".p2phost" / "delivery.db"
        if not database.exists():
            return []
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True,
                                                timeout=10)) as db:
            rows = dict(db.execute("SELECT key, value FROM app_state WHERE app = 'ledger'"))
        count = int(json.loads(rows.get("entries", "0")))
        return [json.loads(rows[f"entry-{k}"]) for k in range(count)]

    def bodies(self, sender: str) -> list[Any]:
        """The bodies ``sender`` sent, in the order they were handled."""
        return [note["body"] for note in self.notes() if note["from"] == sender]

    def wait(self, sender: str | None, count: int, timeout: float) -> list[Any]:
        """The bodies from ``sender`` (anyone: None) once there are ``count``, or what
        there is after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            got = [n["body"] for n in self.notes() if sender is None or n["from"] == sender]
            if len(got) >= count or time.monotonic() > deadline:
                return got
            time.sleep(0.05)

    def wait_after_kill(self, sender: str, count: int, timeout: float) -> list[Any]:
        """As :meth:`wait`, for a receiver killed midway: the bodies without the one
        repeat the contract allows (:func:`without_the_repeat_at_the_kill`)."""
        deadline = time.monotonic() + timeout
        while True:
            got = without_the_repeat_at_the_kill(self.wait(sender, count, 0))
            if len(got) >= count or time.monotonic() > deadline:
                return got
            time.sleep(0.05)


@dataclass
class Node:
    """A ``p2phost run`` process and its project."""

    root: Path
    process: RunningNode
    ledger: Ledger
    #: Every process of this node so far (the fixture stops them after the test).
    runs: list[RunningNode] = field(default_factory=list)

    def restart(self, sig: int = signal.SIGKILL, pause: float = 0.0) -> None:
        """Stop the node with ``sig`` and, ``pause`` seconds later, run it again (same
        project, peer id, inbox)."""
        self.process.stop(sig)
        time.sleep(pause)
        self.process = RunningNode(self.root)
        self.runs.append(self.process)

    @property
    def address(self) -> str:
        """The address it printed."""
        return self.process.address

    @property
    def peer_id(self) -> str:
        """Its peer id."""
        return self.process.peer_id

    def cli(self, *args: str, timeout: float = 60) -> tuple[int, str, str]:
        """``p2phost ARGS`` run in this node's project (a client with its plugins)."""
        done = run_cli(*args, cwd=self.root, timeout=timeout)
        return done.returncode, done.stdout, done.stderr

    def request(self, address: str, topic: str, body: Any) -> Any:
        """``p2phost send ADDRESS TOPIC BODY --request``: the reply, or a failed test."""
        code, out, err = self.cli("send", address, topic, json.dumps(body), "--request")
        assert code == 0, f"p2phost send {address} {topic} failed ({code}): {out}{err}"
        return json.loads(out)

    def wait_connected(self, peers: list[str], timeout: float = 20) -> None:
        """Until its log says it is connected to every peer in ``peers``."""
        deadline = time.monotonic() + timeout
        while not all(f"connected to {p}" in self.process.stderr for p in peers):
            assert time.monotonic() < deadline, f"not connected:\n{self.process.stderr}"
            time.sleep(0.05)


@contextlib.contextmanager
def bursting(sender: Node, to: Node, count: int) -> Iterator[subprocess.Popen[str]]:
    """``sender``'s node sends ``count`` notes to ``to``, asked by a CLI client that waits
    for its answer in the background (killed if still running at the end)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "p2phost", "send", sender.address, "burst",
         json.dumps({"to": to.peer_id, "count": count}), "--request", "--timeout", "60"],
        cwd=sender.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


NodeMaker = Callable[..., Node]
ProjectMaker = Callable[..., Path]


@pytest.fixture
def make_project(tmp_path: Path, official_wheels: dict[str, Path],
                 ledger_wheel: Path) -> ProjectMaker:
    """``make_project(name, medium, url=..., connect=[...], ledger={...}, transport={...})``:
    a project over ``medium`` with json-codec, echo and the ledger app (not started)."""
    def make(name: str, medium: Medium, *, url: str | None = None,
             connect: list[str] | None = None, ledger: dict[str, Any] | None = None,
             transport: dict[str, Any] | None = None) -> Path:
        plugins = [medium.plugin, "json-codec", "echo", "ledger"]
        root = tmp_path / name
        config: dict[str, Any] = {
            "ledger": {"path": str(root / "ledger.jsonl"), **(ledger or {})}}
        if medium.config or transport:
            config[medium.plugin] = {**medium.config, **(transport or {})}
        wheels = [official_wheels[p] for p in plugins if p in official_wheels]
        write_project(root, plugins, wheels=[*wheels, ledger_wheel], name=name,
                      listen=[url or medium.url], config=config)
        if connect:
            manifest = root / "p2phost.toml"
            doc = tomlkit.parse(manifest.read_text())
            doc["node"]["connect"] = connect  # type: ignore[index]
            manifest.write_text(tomlkit.dumps(doc))
        return root
    return make


@pytest.fixture
def make_node(make_project: ProjectMaker) -> Iterator[NodeMaker]:
    """``make_node(name, medium, **project)``: ``p2phost run`` of a new project (see
    ``make_project``), stopped after the test."""
    made: list[Node] = []

    def make(name: str, medium: Medium, **project: Any) -> Node:
        root = make_project(name, medium, **project)
        process = RunningNode(root)
        node = Node(root, process, Ledger(root / "ledger.jsonl"), runs=[process])
        made.append(node)
        return node

    yield make
    for node in reversed(made):
        for process in node.runs:
            process.stop()


def with_port(url: str, port: int) -> str:
    """``url`` with its port replaced by ``port``."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit(":", 1)[0] + f":{port}"))


PROXY = Path(__file__).resolve().parent / "proxy.py"


class Proxy:
    """``proxy.py`` forwarding a free local port to ``target``; cut and restored at will."""

    def __init__(self, target: int, port: int | None = None) -> None:
        self.port, self.target = port or free_port(), target
        self.process: subprocess.Popen[str] | None = None
        self.restore()

    def restore(self) -> None:
        """Listen again on the same port."""
        self.process = subprocess.Popen([sys.executable, str(PROXY), str(self.port),
                                         str(self.target)], stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == "ready"

    def cut(self) -> None:
        """Kill the proxy: every connection through it is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self.process = None

    def url(self, url: str) -> str:
        """``url`` with its port replaced by the proxy's."""
        return with_port(url, self.port)


ProxyMaker = Callable[..., Proxy]


@pytest.fixture
def proxy_to() -> Iterator[ProxyMaker]:
    """``proxy_to(target, port=None)``: a started proxy, killed after the test."""
    made: list[Proxy] = []

    def make(target: int, port: int | None = None) -> Proxy:
        made.append(Proxy(target, port))
        return made[-1]

    yield make
    for proxy in made:
        proxy.cut()
