"""A node in a process of its own, for hostile-peer tests that measure its memory.

Run as ``python -m tests.hostile.node_process '{"security": "noise", "peer_limit": 64}'``
(``"transport": "ws"`` or ``"quic"`` listens on that transport in place of TCP).
It prints ``address ADDRESS`` and ``pid PID`` once it listens; then each line on stdin
is a command: ``stats`` prints the node's counters as one JSON line, ``rss`` its
resident memory in bytes, ``dial ADDRESS PEER_ID`` has it dial a peer (as discovery
would),
``dialling`` prints its dial targets (what ``p2phost peers`` shows) as one JSON line,
``peers`` the control socket's answer (what ``p2phost peers --json`` prints); end
of input stops the node. ``"log": "DEBUG"`` logs at that level (default WARNING).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from typing import Any

from p2phost._runtime import Node, NodeOptions
from p2phost._runtime.node._control import _describe as describe
from p2phost_sdk import App, Identity, Message, PeerRecord, Security, Transport, handler
from tests.discovery.plugins import use_plugin_source

for _name in ("tcp-transport", "websocket-transport", "quic-transport", "json-codec",
              "noise-security", "tls-security"):
    use_plugin_source(_name)

from p2phost_json_codec import JsonCodec  # noqa: E402
from p2phost_noise_security import NoiseSecurity  # noqa: E402
from p2phost_quic_transport import QuicTransport  # noqa: E402
from p2phost_tcp_transport import TcpTransport  # noqa: E402
from p2phost_tls_security import TlsSecurity  # noqa: E402
from p2phost_websocket_transport import WebSocketTransport  # noqa: E402


class Echo(App):
    """Answers ``echo`` requests."""

    name = "echo"

    @handler("echo")
    async def echo(self, message: Message) -> Any:
        return message.body


def rss() -> int:
    """This process's resident memory, in bytes (from /proc)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


async def main(settings: dict[str, Any]) -> None:
    """Run the node until stdin closes."""
    kinds: dict[str, type[Security]] = {"noise": NoiseSecurity, "tls": TlsSecurity}
    kind = settings.pop("security", None)
    security = [kinds[kind]()] if kind else []
    scheme = settings.pop("transport", "tcp")
    transports: dict[str, Transport] = {"tcp": TcpTransport(), "quic": QuicTransport(),
                                        "ws": WebSocketTransport(proxy="")}
    node = Node(Identity.generate(), transports={scheme: transports[scheme]},
                codecs={"application/json": JsonCodec()}, security=security, apps=[Echo()],
                options=NodeOptions(listen=[f"{scheme}://127.0.0.1:0"], **settings))
    await node.start()
    print(f"address {node.addresses[0]}", flush=True)
    print(f"pid {os.getpid()}", flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while line := (await reader.readline()).decode().strip():
            if line == "stats":
                print(json.dumps(node.stats()), flush=True)
            elif line == "rss":
                print(rss(), flush=True)
            elif line.startswith("dial "):
                _, address, peer_id = line.split(" ")
                node.peer_found(PeerRecord((address,), peer_id))
                print("ok", flush=True)
            elif line == "dialling":
                print(json.dumps(node.discovery_status()["dialling"]), flush=True)
            elif line == "peers":
                print(json.dumps(describe(node)), flush=True)
    finally:
        await node.close()
        print("stopped", flush=True)


if __name__ == "__main__":
    given = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    logging.basicConfig(level=given.pop("log", "WARNING"), stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(main(given))
