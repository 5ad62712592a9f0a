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
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from p2phost_sdk import FrameTooLarge, PeerUnavailable, RemoteError, RequestTimeout

from .._errors import UserError
from .._project import Project
from .._redact import redact
from ._client import REACH_FIX, Unreachable, as_client, require_topic, too_large, unreachable
from ._discovery_status import discovery_lines
from ._output import console
from ._stats import print_stats
from .completion import peer_addresses

if TYPE_CHECKING:
    from p2phost_sdk import PluginMetadata

    from .._runtime import Node

# The node runtime and the plugin loader are imported by the commands that use them:
# ``p2phost id`` needs neither.


def check_report(project: Project) -> dict[str, Any]:
    """Load every declared plugin, build its parts: what ``run --check`` reports.

    The shape is documented in docs/cli.md (``run --check --json``).
    """
    from .._plugins import PluginManager, describe
    from .._runtime.node._node import check_manifest_addresses

    loaded = PluginManager(project).load()
    require_served(project, [p.metadata for p in loaded.plugins])
    # With the node's key, as a start builds them: a plugin that signs (gossip) warned
    # here that it had no key and its messages would be refused, which a run never does.
    identity = project.identity()
    parts = loaded.build(identity.peer_id, project.manifest.node.max_frame_size, identity)
    check_manifest_addresses(parts.transports, project.manifest)  # as a start would
    security = [type(s).protocol or type(s).__name__ for s in parts.security]
    return {
        "peer_id": project.identity().peer_id,
        "plugins": [{"name": p.metadata.name, "version": p.metadata.version,
                     "kinds": list(p.metadata.kinds), "declared": p.declared}
                    for p in loaded.plugins],
        "transports": sorted(parts.transports),
        "codecs": list(parts.codecs),
        "apps": [type(a).name or type(a).__name__ for a in parts.apps],
        # The node secures every stream connection with the first security plugin; on
        # inbox media (brokers, databases) it seals each message with the node's keys.
        "security": {"in_use": security[0] if security else None, "unused": security[1:]},
        "lines": describe(loaded.plugins),
    }


def require_served(project: Project, metadata: list[PluginMetadata]) -> None:
    """Refuse a [node] listen address no declared transport serves, with the
    error and fix ``doctor`` gives (the same check: :func:`p2phost._schemes.unserved`)."""
    from .._schemes import unserved

    for _, _, error in unserved(project, metadata, listen_only=True):
        if error is not None:
            raise error


def check_plugins(project: Project, as_json: bool = False) -> None:
    """Load every declared plugin, build its parts, and print what loaded."""
    report = check_report(project)
    if as_json:
        _say(json.dumps({k: v for k, v in report.items() if k != "lines"}))
        return
    for line in report["lines"]:
        console.print(f"loaded {line}")
    console.print(
        f"transports: {', '.join(report['transports']) or 'none'}; "
        f"codecs: {', '.join(report['codecs']) or 'none'}; "
        f"apps: {', '.join(report['apps']) or 'none'}"
    )
    sec = report["security"]
    if sec["in_use"] is None:
        console.print("security: none: connections are NOT authenticated or encrypted")
    else:
        console.print(f"security: {sec['in_use']} on every stream connection; broker and "
                      "database messages sealed end to end")
    for unused in sec["unused"]:
        console.print(f"warning: security plugin {unused!r} is loaded but unused (the node "
                      f"uses {sec['in_use']!r}): remove one from [plugins]")


def _say(line: str) -> None:
    # Plain print, flushed: scripts and tests read these lines while the node runs.
    print(line, flush=True)


async def _serve(project: Project, loop_kind: str) -> None:
    from .._observability._logs import bind
    from .._runtime import ControlServer
    from .._runtime.node._assemble import node_for_project

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
    bind(node=node.options.name, node_id=node.peer_id)  # in every log line of --log-format json
    node_log = logging.getLogger("p2phost")
    # Logged once bound, so that with --log-format json this line has node and node_id too.
    node_log.info("event loop: %s ([node] event-loop = %r)", loop_kind,
                  project.manifest.node.event_loop)
    async with ControlServer(node, project.control_socket), node:
        _say(f"peer id: {node.peer_id}")
        # A relayed address is said once the relay granted its reservation (docs/overlay.md).
        node.when_listening(lambda address: _say(redact(f"listening on {address}")))
        if not node.addresses:
            _say("listening nowhere ([node] listen is empty): dialling out only")
        if node.metrics is not None:
            _say(f"metrics on http://{node.metrics.address}/metrics")
        await stop.wait()
        # A log line, not a print: with --log-format json every line of stderr is JSON.
        node_log.info("stopping: draining mailboxes and closing connections")


def run(
    check: bool = typer.Option(False, "--check", help="Load the plugins, report, and exit."),
    as_json: bool = typer.Option(False, "--json", help="With --check: the report as JSON "
                                 "(docs/cli.md)."),
) -> None:
    """Run the node of ./p2phost.toml until SIGINT/SIGTERM."""
    from .._lock import Lock

    project = Project.find()
    # A lock that cannot be read is refused before anything starts, with --check too: the
    # plugin environment was installed from it, and `plugin sync` would fail on it.
    lock = Lock.load(project.lock_path)
    if check:
        from .._install._health import disagreements

        # What `doctor` reports too: a lock `plugin sync` would refuse or not reproduce.
        for gap in disagreements(lock, project.environment, project.manifest.plugins):
            raise UserError(gap.message, fix=gap.fix)
        check_plugins(project, as_json)
        return
    if as_json:
        raise UserError("--json goes with --check (a running node prints its addresses)",
                        fix="p2phost run --check --json")
    from .._plugins import PluginManager

    resolved, _ = PluginManager(project).resolve()
    require_served(project, [m for _, _, m, _ in resolved])
    node_log = logging.getLogger("p2phost")
    if logging.getLogger().getEffectiveLevel() > logging.INFO:
        node_log.setLevel(logging.INFO)  # connects and disconnects are worth seeing
    from .._runtime._loop import loop_factory
    from .._runtime._loop import run as run_on

    kind, factory = loop_factory(project.manifest.node.event_loop)
    try:
        run_on(_serve(project, kind), factory)
    except asyncio.CancelledError:
        sys.exit(130)


def node_id(as_json: bool = typer.Option(False, "--json", help="Print the answer as JSON "
                                         "(docs/cli.md).")) -> None:
    """Print this project's peer id (the key is created on first use)."""
    project = Project.find()
    peer_id = project.identity().peer_id
    if as_json:
        print(json.dumps({"peer_id": peer_id, "project": str(project.root)}))
        return
    print(peer_id)


def ping(
    address: str = typer.Argument(..., help="The node to ping, e.g. tcp://127.0.0.1:7400.",
                                  autocompletion=peer_addresses),
    count: int = typer.Option(4, "--count", "-c", min=1, help="How many requests."),
    interval: float = typer.Option(1.0, "--interval", "-i", min=0.0,
                                   help="Seconds between requests."),
    timeout: float = typer.Option(5.0, "--timeout", min=0.001,
                                  help="Seconds to wait for each reply."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON summary at the end "
                                 "instead of a line per reply (docs/cli.md)."),
    wait: float = typer.Option(0.0, "--wait", min=0.0, metavar="SECONDS",
                               help="Keep trying to connect this long while the node is not "
                                    "up yet (e.g. just started in the background)."),
) -> None:
    """Round trips to a node's echo app, with timings."""
    project = Project.find()
    say = (lambda line: None) if as_json else _say
    reached: list[str] = []

    async def pings(node: Node, peer: str) -> list[float]:
        require_topic(node, peer, address, "echo",
                       "in that node's project: p2phost plugin install echo")
        reached.append(peer)
        say(redact(f"PING {address} ({peer})"))
        times: list[float] = []
        for seq in range(count):
            if seq:
                await asyncio.sleep(interval)
            started = time.perf_counter()
            try:
                await node.request(peer, "echo", {"seq": seq}, timeout=timeout)
            except RequestTimeout:
                say(f"seq={seq}: no reply within {timeout:g}s")
                continue
            except PeerUnavailable as exc:
                raise Unreachable(str(exc), fix=REACH_FIX) from exc
            times.append((time.perf_counter() - started) * 1000)
            say(f"reply from {peer[:12]}: seq={seq} time={times[-1]:.3f} ms")
        return times

    times = asyncio.run(as_client(project, address, pings, wait=wait))
    lost = count - len(times)
    if as_json:
        _say(json.dumps({"address": redact(address), "peer_id": reached[0] if reached else None,
                         "sent": count, "received": len(times), "lost": lost,
                         "rtt_ms": [round(t, 3) for t in times]}))
    else:
        _say(f"--- {redact(address)}: {count} sent, {len(times)} replies, {lost} lost")
    if not times:
        raise Unreachable(f"no reply from {address}", fix=REACH_FIX)
    say(f"rtt min/median/max = {min(times):.3f}/{statistics.median(times):.3f}/"
        f"{max(times):.3f} ms")
    if lost:
        sys.exit(1)


def _body_text(body: str) -> str:
    # A shell argument tops out near 128 KiB (MAX_ARG_STRLEN), so larger bodies come
    # from standard input or a file, as with curl's "-d @FILE".
    if body == "-":
        text, where = sys.stdin.read(), "read from standard input"
    elif body.startswith("@"):
        try:
            text = Path(body[1:]).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read the body from {body[1:]!r}: {exc}",
                            fix="give the path of a UTF-8 JSON file after @, e.g. @body.json"
                            ) from exc
        where = f"in {body[1:]}"
    else:
        text, where = body, "given"
    if not text.strip():  # json.loads would say "Expecting value: line 1 column 1"
        raise UserError(f"the body {where} is empty: a message's body is one JSON value",
                        fix="send a JSON value, e.g. echo '{\"text\": \"hi\"}' | p2phost "
                            "send ADDR TOPIC - (a message with no content: null)")
    return text


def send(
    address: str = typer.Argument(..., help="The node to send to, e.g. tcp://127.0.0.1:7400.",
                                  autocompletion=peer_addresses),
    topic: str = typer.Argument(..., help="The topic, e.g. chat."),
    body: str = typer.Argument(..., help='The body as JSON, e.g. \'{"text": "hi"}\'; '
                              '"-" reads it from standard input, "@FILE" from a file.'),
    request: bool = typer.Option(False, "--request", help="Send a request; print the reply."),
    timeout: float = typer.Option(10.0, "--timeout", min=0.001,
                                  help="Seconds to wait for the reply (with --request), or "
                                       "for the acknowledgement on acknowledged topics."),
) -> None:
    """Send one message (or one request, printing the reply) to a node."""
    if not topic.strip():
        # MESSAGE and REQUEST frames always name a topic (docs/wire.md): "" reaches no app.
        raise UserError("the topic is empty: a message goes to the app that handles its "
                        "topic", fix="name the topic, e.g. p2phost send ADDR echo '{}' "
                                     "(p2phost describe ADDR lists a node's topics)")
    try:
        value = json.loads(_body_text(body))
    except ValueError as exc:
        raise UserError(f"the body is not valid JSON: {exc}",
                        fix='quote it for the shell, e.g. \'{"text": "hi"}\'') from exc
    project = Project.find()

    async def deliver(node: Node, peer: str) -> Any:
        require_topic(node, peer, address, topic,
                       f"install the app plugin for {topic!r} in that node's project")
        if request:
            return await node.request(peer, topic, value, timeout=timeout)
        await node.send(peer, topic, value)
        if node.delivery.acknowledged_to(peer, topic):
            if await node.delivery.settle(timeout):
                raise Unreachable(f"{address} did not acknowledge the message within "
                                  f"{timeout:g}s",
                                  fix="check that node's log, or give it more --timeout")
            return "acknowledged"
        return None

    async def store(node: Node) -> Any:
        if request:
            return await node.request(address, topic, value, timeout=timeout)
        medium = await node.store(address, topic, value)
        return f"stored for {address.rsplit('#', 1)[-1]} on {medium}"

    def answered(work: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        # Connected or stored, a failure reads the same to the user.
        async def run(*args: Any) -> Any:
            try:
                return await work(*args)
            except RemoteError as exc:
                raise Unreachable(f"{address} answered with an error: {exc.remote_message}",
                                  fix=f"check the body against what the {topic!r} app expects"
                                  ) from exc
            except FrameTooLarge as exc:
                raise too_large(exc) from exc
            except (RequestTimeout, PeerUnavailable) as exc:
                raise unreachable(project, address, exc) from exc
        return run

    reply = asyncio.run(as_client(project, address, answered(deliver), stored=answered(store)))
    if request:
        _say(json.dumps(reply))
    else:
        said = f" ({reply})" if isinstance(reply, str) else ""
        print(redact(f"sent to {address}{said}"), file=sys.stderr)


def peers(
    as_json: bool = typer.Option(False, "--json", help="Print the answer as JSON."),
    stats: bool = typer.Option(False, "--stats", help="Delivery counters per topic: sent, "
                               "acknowledged, retried, dead-lettered, dropped (docs/delivery.md)."),
) -> None:
    """The peers of this project's running node (or, with --stats, its delivery counters)."""
    from .._runtime import query_control

    project = Project.find()
    answer = query_control(project.control_socket, "stats" if stats else "peers",
                           start=project.start)
    if stats and not as_json:
        print_stats(answer)
        return
    if as_json:
        _say(redact(json.dumps(answer)))  # addresses, maybe with a broker's password
        return
    found = answer.get("peers", [])
    _say(f"peer id: {answer.get('peer_id')} ({len(found)} peers)")
    for peer in found:
        topics = ", ".join(peer.get("topics", [])) or "-"
        _say(redact(f"{peer.get('peer_id')}  {peer.get('address')}  {peer.get('codec')}  "
                    f"security: {peer.get('security') or '?'}  topics: {topics}"))
    for _, text, fix in discovery_lines(answer):
        _say(text + (f"\n  fix: {fix}" if fix else ""))


def register(app: typer.Typer) -> None:
    """Add the node commands."""
    app.command()(run)
    app.command("id")(node_id)
    app.command()(ping)
    app.command()(send)
    app.command()(peers)
