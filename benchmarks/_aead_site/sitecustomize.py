"""``benchmarks/aead.py --in-node``: noise-security's AEAD calls timed inside a node.

Loaded (as ``sitecustomize``) into ``benchmarks/messaging.py``'s processes when this
directory is on ``PYTHONPATH``, and active only with ``P2PHOST_AEAD_TIMES`` set to a
directory: every ``NoiseConnection`` made then has its seal and open calls wrapped in a
clock, and the durations (ns, one per line, ``enc`` or ``dec`` first) go to a file there
named for the process's role (``client-PID.txt``, or ``server-PID.txt`` for
``messaging.py --serve``): 512 calls at a time as they come (the server is killed, it
never exits), and the rest when a process exits normally. With
``P2PHOST_AEAD_CIPHER=aesgcm`` both nodes use AES-256-GCM under the same transport keys:
a diagnostic, never a configuration (p2phost does not negotiate the cipher).
"""

from __future__ import annotations

import os

_OUT = os.environ.get("P2PHOST_AEAD_TIMES")

if _OUT:
    import atexit
    import sys
    import time
    from pathlib import Path
    from typing import Any

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "official-plugins"
                           / "noise-security" / "src"))
    from p2phost_noise_security import _connection, _noise

    if os.environ.get("P2PHOST_AEAD_CIPHER") == "aesgcm":
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        def _aes_split(self: Any) -> tuple[Any, Any]:
            first, second = _noise._hkdf(self._ck, b"")
            to_responder, to_initiator = AESGCM(first), AESGCM(second)
            return (to_responder, to_initiator) if self.initiator else (to_initiator, to_responder)

        _noise.HandshakeState.split = _aes_split  # type: ignore[method-assign]

    _times: dict[str, list[int]] = {"enc": [], "dec": []}
    _init = _connection.NoiseConnection.__init__

    def _timed(self: Any, *args: Any, **kwargs: Any) -> None:
        _init(self, *args, **kwargs)
        clock, seal, open_ = time.perf_counter_ns, self._encrypt, self._decrypt
        enc, dec = _times["enc"], _times["dec"]
        sealed, opened = enc.append, dec.append

        def encrypt(nonce: bytes, data: bytes, ad: None) -> bytes:
            start = clock()
            out: bytes = seal(nonce, data, ad)
            sealed(clock() - start)
            if not len(enc) % 512:
                _dump()
            return out

        def decrypt(nonce: bytes, data: bytes, ad: None) -> bytes:
            start = clock()
            out: bytes = open_(nonce, data, ad)
            opened(clock() - start)
            if not len(dec) % 512:
                _dump()
            return out

        self._encrypt, self._decrypt = encrypt, decrypt

    _connection.NoiseConnection.__init__ = _timed  # type: ignore[method-assign]

    _role = "server" if "--serve" in sys.argv else "client"
    _written = {"enc": 0, "dec": 0}

    def _dump() -> None:
        lines = [f"{kind} {ns}" for kind, values in _times.items()
                 for ns in values[_written[kind]:]]
        for kind, values in _times.items():
            _written[kind] = len(values)
        if lines:
            with (Path(_OUT) / f"{_role}-{os.getpid()}.txt").open("a") as file:
                file.write("\n".join(lines) + "\n")

    atexit.register(_dump)
