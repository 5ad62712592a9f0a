"""A man in the middle as its own process: relays TCP between nodes and, on command,
replays or alters what the dialler sends.

Commands on stdin, each answered with one line: ``replay`` (send the dialler's last chunk
to the listener a second time), ``flip`` (alter one byte of the dialler's next chunk).
It lives 60 s at most.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

_RELAY = r"""
import asyncio, sys
port = int(sys.argv[1])
state = {"last": b"", "flip": False, "upstream": None}

async def pipe(reader, writer, from_dialler):
    try:
        while data := await reader.read(65536):
            if from_dialler:
                if state["flip"]:
                    state["flip"] = False
                    i = len(data) // 2
                    data = data[:i] + bytes([data[i] ^ 1]) + data[i + 1:]
                state["last"], state["upstream"] = data, writer
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()

async def handle(reader, writer):
    up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
    await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))

async def commands():
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        if line.strip() == "replay":
            state["upstream"].write(state["last"])
            print("replayed", len(state["last"]), flush=True)
        elif line.strip() == "flip":
            state["flip"] = True
            print("armed", flush=True)

async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.wait_for(commands(), 60)

asyncio.run(main())
"""


class Relay:
    """A running relay process; ``address`` is where to dial instead of the target."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        assert process.stdout is not None
        self.address = f"tcp://127.0.0.1:{int(process.stdout.readline())}"

    def command(self, line: str) -> str:
        """Send a command; its answer line."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return self.process.stdout.readline().strip()


@contextmanager
def relay_to(target: str) -> Iterator[Relay]:
    """A relay process in front of ``tcp://127.0.0.1:PORT``."""
    process = subprocess.Popen([sys.executable, "-c", _RELAY, target.rsplit(":", 1)[1]],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        yield Relay(process)
    finally:
        process.kill()
        process.wait(10)
