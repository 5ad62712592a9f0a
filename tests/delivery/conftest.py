"""Projects and processes for the acknowledged-delivery tests: the tally apps over any medium.

A *receiver* runs the tally app (its counts live in the node's delivery database, so a
test reads them from ``.p2phost/delivery.db``); a *sender* also runs the producer,
which sends ``count`` tally messages to the receiver with idempotency keys.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import tomlkit

from tests.brokers.conftest import MEDIA, Medium
from tests.conftest import build_wheels, run_cli, write_project
from tests.runtime.conftest import make_node  # noqa: F401 (in-process nodes, for test_node)
from tests.runtime.processes import RunningNode, free_port

TALLY = Path(__file__).resolve().parent / "plugins" / "tally"
#: The media of the delivery tests: every durable one (NATS with JetStream) and tcp.
DELIVERY_MEDIA = {name: MEDIA["nats-jetstream" if name == "nats" else name]
                  for name in ("tcp", "redis", "nats", "mqtt", "amqp", "postgresql")}


@pytest.fixture(scope="session")
def tally_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tally test apps, built once."""
    return build_wheels([TALLY], tmp_path_factory.mktemp("tally-wheel"))["tally"]


def read_db(root: Path, query: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of ``query`` on the project's delivery database ([] before it exists)."""
    path = root / ".p2phost" / "delivery.db"
    if not path.exists():
        return []
    with closing(sqlite3.connect(path, timeout=10)) as db:
        return db.execute(query, args).fetchall()


@dataclass
class Project:
    """A project on disk, and its ``p2phost run`` process while it runs."""

    root: Path
    process: RunningNode | None = None

    def start(self) -> RunningNode:
        """Run its node (again)."""
        self.process = RunningNode(self.root)
        return self.process

    @property
    def node(self) -> RunningNode:
        """The running process."""
        assert self.process is not None, "the node is not running"
        return self.process

    def cli(self, *args: str, timeout: float = 60) -> tuple[int, str, str]:
        """``p2phost ARGS`` in this project."""
        done = run_cli(*args, cwd=self.root, timeout=timeout)
        return done.returncode, done.stdout, done.stderr

    def cli_json(self, *args: str) -> Any:
        """``p2phost ARGS --json``: the parsed answer (the command must succeed)."""
        code, out, err = self.cli(*args, "--json")
        assert code == 0, f"p2phost {' '.join(args)} failed ({code}): {out}{err}"
        return json.loads(out)

    def tallies(self) -> dict[int, int]:
        """How many times each tally seq reached the handler (as committed)."""
        rows = read_db(self.root, "SELECT key, value FROM app_state WHERE app = 'tally' "
                                  "AND key LIKE 'n/%'")
        return {int(key[2:]): int(value) for key, value in rows}

    def state(self, prefix: str) -> dict[str, Any]:
        """The tally app's stored values whose keys start with ``prefix``."""
        rows = read_db(self.root, "SELECT key, value FROM app_state WHERE app = 'tally' "
                                  "AND key LIKE ?", (prefix + "%",))
        return {key: json.loads(value) for key, value in rows}

    def outbox(self) -> int:
        """Messages waiting in its outbox."""
        rows = read_db(self.root, "SELECT COUNT(*) FROM outbox")
        return int(rows[0][0]) if rows else 0

    def wait_until(self, what: str, check: Callable[[], bool], timeout: float) -> None:
        """Poll ``check`` until it is true; fail with the node's log after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                log = self.process.stderr[-6000:] if self.process else ""
                pytest.fail(f"{self.root.name}: {what} within {timeout:g}s\n{log}")
            time.sleep(0.05)


ProjectMaker = Callable[..., Project]


@pytest.fixture
def delivery_project(tmp_path: Path, official_wheels: dict[str, Path],
                     tally_wheel: Path) -> Iterator[ProjectMaker]:
    """``delivery_project(name, medium, tally={...}, delivery={...}, connect=[...])``: a
    project over ``medium`` with json-codec and the tally apps; stopped after the test."""
    made: list[Project] = []

    def make(name: str, medium: Medium, *, tally: dict[str, Any] | None = None,
             delivery: dict[str, Any] | None = None, connect: list[str] | None = None,
             plugins: tuple[str, ...] = ()) -> Project:
        root = tmp_path / name
        names = [medium.plugin, "json-codec", "tally", *plugins]
        url = f"tcp://127.0.0.1:{free_port()}" if medium.name == "tcp" else medium.url
        config: dict[str, Any] = {"tally": {"fixed": str(root / "fixed"), **(tally or {})}}
        if medium.config:
            config[medium.plugin] = medium.config
        wheels = [official_wheels[p] for p in names if p in official_wheels]
        write_project(root, names, wheels=[*wheels, tally_wheel], name=name, listen=[url],
                      config=config)
        manifest = root / "p2phost.toml"
        doc = tomlkit.parse(manifest.read_text())
        if connect:
            doc["node"]["connect"] = connect  # type: ignore[index]
        if delivery:
            doc["delivery"] = delivery
        manifest.write_text(tomlkit.dumps(doc))
        project = Project(root)
        made.append(project)
        return project

    yield make
    for project in reversed(made):
        if project.process is not None:
            project.process.stop()
