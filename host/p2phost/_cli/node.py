"""Node commands: run, id, ping, send, peers.

``run`` starts the project's node until SIGINT/SIGTERM. ``ping`` and ``send`` start a
short-lived *client* node (the project's identity, no listeners, no apps) with the project's
transports, codecs and security, talk to ADDR, and shut down gracefully so what they sent
is delivered. ``peers`` asks the running node through its control socket.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import typer

from p2phost_sdk import PeerUnavailable, RemoteError, RequestTimeout

from .._errors import UserError
from .._plugins import PluginManager, describe
from .._project import Project
from .._runtime import ControlServer, Node, query_control
from .._runtime.node._assemble import node_for_project
from ._discovery_status import discovery_lines
from ._output import console
from ._stats import print_stats

T = TypeVar("T")
_REACH_FIX = "check the address, and that a node runs there (`p2phost run` in its project)"


class Unreachable(UserError):
    """The peer could not be reached or did not answer: a runtime failure (exit 1)."""

    exit_code = 1


def check_plugins(project: Project) -> None:
    """Load every declared plugin, build its parts, and print what loaded."""
    loaded = PluginManager(project).load()
    parts = loaded.build(project.identity().peer_id, project.manifest.node.max_frame_size)
    for line in describe(loaded.plugins):
        console.print(f"loaded {line}")
    console.print(
        f"transports: {', '.join(sorted(parts.transports)) or 'none'}; "
        f"codecs: {', '.join(parts.codecs) or 'none'}; "
        f"apps: {', '.join(type(a).name or type(a).__name__ for a in parts.apps) or 'none'}"
    )


def _say(line: str) -> None:
    # Plain print, flushed: scripts and tests read these lines while the node runs.
    print(line, flush=True)


async def _serve(project: Project) -> None:
    node = node_for_project(project)
    stop = asyncio.Event()
    main = asyncio.current_task()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set() and main is not None:
            main.cancel()  # a second signal: stop waiting for the drain
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    async with ControlServer(node, project.control_socket), node:
        _say(f"peer id: {node.peer_id}")
        for address in node.addresses:
            _say(f"listening on {address}")
        if not node.addresses:
            _say("listening nowhere ([node] listen is empty): dialling out only")
        await stop.wait()
        print("stopping: draining mailboxes and closing connections", file=sys.stderr,
              flush=True)


def run(
    check: bool = typer.Option(False, "--check", help="Load the plugins, report, and exit."),
) -> None:
    """Run the node of ./p2phost.toml until SIGINT/SIGTERM."""
    project = Project.find()
    if check:
        check_plugins(project)
        return
    node_log = logging.getLogger("p2phost")
    if logging.getLogger().getEffectiveLevel() > logging.INFO:
        node_log.setLevel(logging.INFO)  # connects and disconnects are worth seeing
    try:
        asyncio.run(_serve(project))
    except asyncio.CancelledError:
        sys.exit(130)


def node_id() -> None:
    """Print this project's peer id (the key is created on first use)."""
    print(Project.find().identity().peer_id)


async def _as_client(project: Project, address: str,
                     work: Callable[[Node, str], Awaitable[T]],
                     stored: Callable[[Node], Awaitable[T]] | None = None) -> T:
    node = node_for_project(project, client=True)
    async with node:
        if stored is not None and node.stores_letters(address):
            # An inbox on a medium that holds messages: no handshake, the peer may not run.
            return await stored(node)
        try:
            peer = await node.connect(address)
        except PeerUnavailable as exc:
            raise Unreachable(str(exc), fix=_REACH_FIX) from exc
        return await work(node, peer)


def _topics_of(node: Node, peer: str) -> frozenset[str]:
    return next((p.topics for p in node.peers() if p.peer_id == peer), frozenset())


def _require_topic(node: Node, peer: str, address: str, topic: str, fix: str) -> None:
    topics = _topics_of(node, peer)
    if topic not in topics:
        has = ", ".join(sorted(topics)) or "none"
        raise UserError(f"the node at {address} has no app for topic {topic!r} "
                        f"(its topics: {has})",
                        fix=fix)


def ping(
    address: str = typer.Argument(..., help="The node to ping, e.g. tcp://127.0.0.1:7400."),
    count: int = typer.Option(4, "--count", "-c", min=1, help="How many requests."),
    interval: float = typer.Option(1.0, "--interval", "-i", min=0.0,
                                   help="Seconds between requests."),
    timeout: float = typer.Option(5.0, "--timeout", min=0.001,
                                  help="Seconds to wait for each reply."),
) -> None:
    """Round trips to a node's echo app, with timings."""
    project = Project.find()

    async def pings(node: Node, peer: str) -> list[float]:
        _require_topic(node, peer, address, "echo",
                       "in that node's project: p2phost plugin install echo")
        _say(f"PING {address} ({peer})")
        times: list[float] = []
        for seq in range(count):
            if seq:
                await asyncio.sleep(interval)
            started = time.perf_counter()
            try:
                await node.request(peer, "echo", {"seq": seq}, timeout=timeout)
            except RequestTimeout:
                _say(f"seq={seq}: no reply within {timeout:g}s")
                continue
            except PeerUnavailable as exc:
                raise Unreachable(str(exc), fix=_REACH_FIX) from exc
            times.append((time.perf_counter() - started) * 1000)
            _say(f"reply from {peer[:12]}: seq={seq} time={times[-1]:.3f} ms")
        return times

    times = asyncio.run(_as_client(project, address, pings))
    lost = count - len(times)
    _say(f"--- {address}: {count} sent, {len(times)} replies, {lost} lost")
    if not times:
        raise Unreachable(f"no reply from {address}", fix=_REACH_FIX)
    _say(f"rtt min/median/max = {min(times):.3f}/{statistics.median(times):.3f}/"
         f"{max(times):.3f} ms")
    if lost:
        sys.exit(1)


def send(
    address: str = typer.Argument(..., help="The node to send to, e.g. tcp://127.0.0.1:7400."),
    topic: str = typer.Argument(..., help="The topic, e.g. chat."),
    body: str = typer.Argument(..., help='The body as JSON, e.g. \'{"text": "hi"}\'.'),
    request: bool = typer.Option(False, "--request", help="Send a request; print the reply."),
    timeout: float = typer.Option(10.0, "--timeout", min=0.001,
                                  help="Seconds to wait for the reply (with --request), or "
                                       "for the acknowledgement on acknowledged topics."),
) -> None:
    """Send one message (or one request, printing the reply) to a node."""
    try:
        value = json.loads(body)
    except ValueError as exc:
        raise UserError(f"the body is not valid JSON: {exc}",
                        fix='quote it for the shell, e.g. \'{"text": "hi"}\'') from exc
    project = Project.find()

    async def deliver(node: Node, peer: str) -> Any:
        _require_topic(node, peer, address, topic,
                       f"install the app plugin for {topic!r} in that node's project")
        try:
            if request:
                return await node.request(peer, topic, value, timeout=timeout)
            await node.send(peer, topic, value)
            if node.delivery.acknowledged_to(peer, topic):
                if await node.delivery.settle(timeout):
                    raise Unreachable(f"{address} did not acknowledge the message within "
                                      f"{timeout:g}s",
                                      fix="check that node's log, or give it more --timeout")
                return "acknowledged"
        except RemoteError as exc:
            raise Unreachable(f"{address} answered with an error: {exc.remote_message}",
                              fix=f"check the body against what the {topic!r} app expects"
                              ) from exc
        except (RequestTimeout, PeerUnavailable) as exc:
            raise Unreachable(str(exc), fix=_REACH_FIX) from exc
        return None

    async def store(node: Node) -> Any:
        try:
            if request:
                return await node.request(address, topic, value, timeout=timeout)
            medium = await node.store(address, topic, value)
        except RemoteError as exc:
            raise Unreachable(f"{address} answered with an error: {exc.remote_message}",
                              fix=f"check the body against what the {topic!r} app expects"
                              ) from exc
        except (RequestTimeout, PeerUnavailable) as exc:
            raise Unreachable(str(exc), fix=_REACH_FIX) from exc
        return f"stored for {address.rsplit('#', 1)[-1]} on {medium}"

    reply = asyncio.run(_as_client(project, address, deliver, store))
    if request:
        _say(json.dumps(reply))
    else:
        said = f" ({reply})" if isinstance(reply, str) else ""
        print(f"sent to {address}{said}", file=sys.stderr)


def peers(
    as_json: bool = typer.Option(False, "--json", help="Print the answer as JSON."),
    stats: bool = typer.Option(False, "--stats", help="Delivery counters per topic: sent, "
                               "acknowledged, retried, dead-lettered, dropped (docs/delivery.md)."),
) -> None:
    """The peers of this project's running node (or, with --stats, its delivery counters)."""
    answer = query_control(Project.find().control_socket, "stats" if stats else "peers")
    if stats and not as_json:
        print_stats(answer)
        return
    if as_json:
        _say(json.dumps(answer))
        return
    found = answer.get("peers", [])
    _say(f"peer id: {answer.get('peer_id')} ({len(found)} peers)")
    for peer in found:
        topics = ", ".join(peer.get("topics", [])) or "-"
        _say(f"{peer.get('peer_id')}  {peer.get('address')}  {peer.get('codec')}  "
             f"topics: {topics}")
    for _, text, fix in discovery_lines(answer):
        _say(text + (f"\n  fix: {fix}" if fix else ""))


def register(app: typer.Typer) -> None:
    """Add the node commands."""
    app.command()(run)
    app.command("id")(node_id)
    app.command()(ping)
    app.command()(send)
    app.command()(peers)
