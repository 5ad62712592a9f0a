"""A node in a process of its own, for hostile-peer tests that measure its memory.

Run as ``python -m tests.hostile.node_process '{"security": "noise", "peer_limit": 64}'``.
It prints ``address ADDRESS`` and ``pid PID`` once it listens; then each line on stdin
is a command: ``stats`` prints the node's counters as one JSON line, ``rss`` its
resident memory in bytes; end of input stops the node.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from typing import Any

from p2phost._runtime import Node, NodeOptions
from p2phost_sdk import App, Identity, Message, Security, handler
from tests.discovery.plugins import use_plugin_source

for _name in ("tcp-transport", "json-codec", "noise-security", "tls-security"):
    use_plugin_source(_name)

from p2phost_json_codec import JsonCodec  # noqa: E402
from p2phost_noise_security import NoiseSecurity  # noqa: E402
from p2phost_tcp_transport import TcpTransport  # noqa: E402
from p2phost_tls_security import TlsSecurity  # noqa: E402


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
    node = Node(Identity.generate(), transports={"tcp": TcpTransport()},
                codecs={"application/json": JsonCodec()}, security=security, apps=[Echo()],
                options=NodeOptions(listen=["tcp://127.0.0.1:0"], **settings))
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
    finally:
        await node.close()
        print("stopped", flush=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(main(json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}))
