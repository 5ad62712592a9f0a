"""One AEAD call as noise-security makes it: hot, cold, and in instructions.

Each variant seals or opens one 98-byte plaintext (a 64 B request with its envelope and
record header), as ``NoiseConnection`` does once per frame and direction:

* ``hot``: back to back, in a loop (what ``timeit`` reports);
* ``after epoll``: the first call after sleeping 200 us in ``epoll_wait`` with nothing
  else touched, median of the calls (a node sleeps there between requests);
* ``after eviction``: the first call after writing 8 MiB (every cache level evicted,
  as the other work of a round trip and the other process on the CPU may do);
* ``--instructions``: under callgrind, instructions per call (N and 2N calls, the
  difference over N), load-free; ``empty`` is the loop's own cost, to subtract;
* ``--in-node``: the calls as a node makes them, timed one by one in the client and
  the server of ``benchmarks/messaging.py --quick --rounds 1 --round-trips --only
  p2phost+noise`` (``--loop``; ``--aesgcm``: both nodes on AES-256-GCM, a diagnostic),
  percentiles of each side's seals and opens (an open is the first call after each
  wake-up: the client's of a reply, the server's of a request).

Variants: ``cryptography``'s ChaCha20-Poly1305 (noise-security's cipher) ``encrypt``,
``decrypt``, ``encrypt_into`` and ``decrypt_into``; one frame sealed by
``NoiseConnection.try_send`` and opened by its push-mode ``frames_received`` (both AEAD
calls and the plugin's Python per frame); AES-256-GCM (``AESGCM``, another Noise
cipher, which p2phost does not negotiate); a 98-byte ``bytes`` copy as a control; and
PyNaCl's (libsodium) ChaCha20-Poly1305 when installed. Run ``python benchmarks/aead.py``
(``--instructions`` needs valgrind; about a minute). On a shared machine the times swing
with its load (printed); the instruction counts do not.
"""

from __future__ import annotations

import argparse
import os
import re
import select
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cryptography
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

KEY = bytes(range(32))
NONCE = struct.Struct("<4xQ").pack(7)
PLAINTEXT = bytes(98)


def variants() -> dict[str, Callable[[], object]]:
    """Each variant as a call of no arguments."""
    chacha, aes = ChaCha20Poly1305(KEY), AESGCM(KEY)
    sealed, aes_sealed = chacha.encrypt(NONCE, PLAINTEXT, None), aes.encrypt(NONCE, PLAINTEXT, None)
    into, opened = bytearray(len(sealed)), bytearray(len(PLAINTEXT))
    calls: dict[str, Callable[[], object]] = {
        "empty": lambda: None,
        "bytes copy (control)": lambda: PLAINTEXT[1:],
        "chacha encrypt": lambda: chacha.encrypt(NONCE, PLAINTEXT, None),
        "chacha decrypt": lambda: chacha.decrypt(NONCE, sealed, None),
        "chacha encrypt_into": lambda: chacha.encrypt_into(NONCE, PLAINTEXT, None, into),
        "chacha decrypt_into": lambda: chacha.decrypt_into(NONCE, sealed, None, opened),
        "aesgcm encrypt": lambda: aes.encrypt(NONCE, PLAINTEXT, None),
        "aesgcm decrypt": lambda: aes.decrypt(NONCE, aes_sealed, None),
    }
    calls["noise frame out+in"] = _noise_frame()
    try:
        from nacl import bindings
    except ImportError:
        return calls
    calls["pynacl encrypt"] = lambda: bindings.crypto_aead_chacha20poly1305_ietf_encrypt(
        PLAINTEXT, None, NONCE, KEY)
    calls["pynacl decrypt"] = lambda: bindings.crypto_aead_chacha20poly1305_ietf_decrypt(
        sealed, None, NONCE, KEY)
    return calls


def _noise_frame() -> Callable[[], object]:
    """One frame (the 94 bytes the 98-byte plaintext carries) through noise-security's
    per-frame paths: ``try_send`` on one connection, push mode's open on another, over
    stand-ins for the transport and the node (the AEAD calls and the plugin's Python
    together: less the two chacha calls above, what the plugin's Python costs)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "official-plugins"
                           / "noise-security" / "src"))
    from p2phost_noise_security._connection import NoiseConnection

    class Transport:
        local_address = remote_address = "stand-in"
        sent = b""

        def try_send(self, frame: bytes) -> bool:
            self.sent = frame
            return True

        def push(self, sink: object) -> bool:
            return True

    class Node:
        def frames_received(self, frames: list[bytes]) -> None:
            pass

    out, into = Transport(), Transport()
    sender, receiver = (NoiseConnection(  # type: ignore[arg-type]
        inner, send_cipher=ChaCha20Poly1305(KEY), recv_cipher=ChaCha20Poly1305(KEY),
        remote_peer_id="peer", max_frame_size=16 << 20) for inner in (out, into))
    assert receiver.push(Node())  # type: ignore[arg-type]
    frame, send, opened = PLAINTEXT[4:], sender.try_send, receiver.frames_received

    def call() -> None:
        send(frame)
        opened([out.sent])
    return call


def hot(call: Callable[[], object], count: int = 20_000) -> float:
    """Nanoseconds per call, back to back."""
    for _ in range(1000):
        call()
    start = time.perf_counter_ns()
    for _ in range(count):
        call()
    return (time.perf_counter_ns() - start) / count


def cold(call: Callable[[], object], evict: bool, count: int = 2000) -> float:
    """Median nanoseconds of a call made first after a sleep in epoll (or an eviction)."""
    poller, (reader, writer) = select.epoll(), os.pipe()
    poller.register(reader, select.EPOLLIN)
    junk, ones = bytearray(8 << 20), b"\1" * ((8 << 20) // 64)
    times = []
    try:
        for _ in range(count):
            if evict:
                junk[::64] = ones  # one write per cache line
            else:
                poller.poll(0.0002)
            start = time.perf_counter_ns()
            call()
            times.append(time.perf_counter_ns() - start)
    finally:
        poller.close()
        os.close(reader)
        os.close(writer)
    return statistics.median(times)


def instructions(name: str, count: int) -> int:
    """What callgrind counts for ``count`` calls of ``name`` and the script around them."""
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
         __file__, "--run", name, str(count)], capture_output=True, text=True, check=True)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise SystemExit(f"callgrind printed no count:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def in_node(loop: str, aesgcm: bool) -> None:
    """Run messaging.py's noise round trips with ``_aead_site`` timing the AEAD calls."""
    here = Path(__file__).resolve().parent
    with tempfile.TemporaryDirectory() as out:
        env = {**os.environ, "P2PHOST_AEAD_TIMES": out,
               "P2PHOST_AEAD_CIPHER": "aesgcm" if aesgcm else "chacha",
               "PYTHONPATH": os.pathsep.join([str(here / "_aead_site"),
                                              os.environ.get("PYTHONPATH", "")])}
        subprocess.run([sys.executable, str(here / "messaging.py"), "--quick", "--rounds", "1",
                        "--round-trips", "--only", "p2phost+noise", "--loop", loop],
                       env=env, check=True, capture_output=True)
        times: dict[str, list[int]] = {f"{role} {kind}": [] for role in ("client", "server")
                                       for kind in ("enc", "dec")}
        for found in Path(out).glob("*.txt"):
            role = found.name.split("-")[0]
            for line in found.read_text().splitlines():
                kind, ns = line.split()
                times[f"{role} {kind}"].append(int(ns))
    cipher = "AES-256-GCM" if aesgcm else "ChaCha20-Poly1305"
    print(f"{cipher} in the nodes, {loop} loop (ns per call)")
    for key, name in (("client enc", "client: seal (request)"),
                      ("client dec", "client: open (reply)"),
                      ("server dec", "server: open (request)"),
                      ("server enc", "server: seal (reply)")):
        values = sorted(times[key])
        if not values:
            raise SystemExit("no calls were timed: did messaging.py run noise-security?")
        cut = {q: values[len(values) * q // 100] for q in (10, 50, 90)}
        print(f"{name:24}{len(values):>7} calls  p10 {cut[10]:>6,}  p50 {cut[50]:>6,}"
              f"  p90 {cut[90]:>6,}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instructions", action="store_true",
                        help="instructions per call under callgrind instead of times")
    parser.add_argument("--in-node", action="store_true",
                        help="time the calls inside a node's round trips instead")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--aesgcm", action="store_true",
                        help="with --in-node: both nodes on AES-256-GCM (a diagnostic)")
    parser.add_argument("--run", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    calls = variants()
    if args.run:
        call = calls[args.run[0]]
        for _ in range(int(args.run[1])):
            call()
        return
    print(f"cryptography {cryptography.__version__}; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.in_node:
        in_node(args.loop, args.aesgcm)
        return
    if args.instructions:
        count = 2000
        instructions("empty", 1)  # a first run may compile .pyc files: not counted
        print(f"{'variant':24}{'instructions per call':>22}")
        for name in calls:
            per = (instructions(name, 2 * count) - instructions(name, count)) / count
            print(f"{name:24}{per:>22,.0f}", flush=True)
        return
    print(f"{'variant (ns per call)':24}{'hot':>8}{'after epoll':>13}{'after eviction':>16}")
    for name, call in calls.items():
        print(f"{name:24}{hot(call):>8,.0f}{cold(call, evict=False):>13,.0f}"
              f"{cold(call, evict=True):>16,.0f}", flush=True)


if __name__ == "__main__":
    main()
