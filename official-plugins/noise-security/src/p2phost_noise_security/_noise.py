"""The Noise XX handshake, ``Noise_XX_25519_ChaChaPoly_SHA256``, on ``cryptography``.

This follows the Noise Protocol Framework specification (revision 34), sections 5
(processing rules) and 7 (the XX pattern), and nothing else: no PSKs, no fallback.
The ``noiseprotocol`` package implements the same, but it has had no release since
2020 and hides the transport keys this plugin needs for its fast path; the test suite
runs both against each other to prove they agree byte for byte.

A handshake is three messages::

    -> e
    <- e, ee, s, es
    -> s, se

after which :meth:`HandshakeState.split` gives one AEAD key per direction.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

PROTOCOL_NAME = b"Noise_XX_25519_ChaChaPoly_SHA256"
#: Bytes of an X25519 public key, an AEAD tag, and the largest Noise message.
DHLEN, TAGLEN, MAX_MESSAGE = 32, 16, 65535
#: The Noise nonce of ChaChaPoly: 32 zero bits, then the 64-bit counter little-endian.
pack_nonce = struct.Struct("<4xQ").pack
#: Nonce 2**64-1 is reserved by the specification.
MAX_NONCE = 2**64 - 1

_PATTERN: tuple[tuple[str, ...], ...] = (("e",), ("e", "ee", "s", "es"), ("s", "se"))


class NoiseError(Exception):
    """A handshake message is malformed or fails authentication."""


def public_bytes(key: X25519PrivateKey) -> bytes:
    """The raw 32-byte public key of ``key``."""
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _hkdf(chaining_key: bytes, material: bytes) -> tuple[bytes, bytes]:
    temp = hmac.digest(chaining_key, material, "sha256")
    first = hmac.digest(temp, b"\x01", "sha256")
    return first, hmac.digest(temp, first + b"\x02", "sha256")


def _dh(private: X25519PrivateKey, public: bytes) -> bytes:
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError:  # a low-order point gives an all-zero secret: refuse it
        raise NoiseError("the peer sent an invalid X25519 public key") from None


class HandshakeState:
    """One side of a Noise XX handshake.

    Call :meth:`write_message` and :meth:`read_message` in the pattern's order (the
    initiator writes first), then :meth:`split`. Any error is final for the handshake.
    """

    def __init__(self, *, initiator: bool, static: X25519PrivateKey, prologue: bytes) -> None:
        self.initiator = initiator
        self._s = static
        self._e: X25519PrivateKey | None = None
        self._re = b""
        #: The peer's static public key, known once the message carrying it is read.
        self.remote_static = b""
        self._h = PROTOCOL_NAME  # exactly HASHLEN bytes, so used as is
        self._ck = self._h
        self._k: ChaCha20Poly1305 | None = None
        self._n = 0
        self._step = 0
        self._mix_hash(prologue)

    @property
    def finished(self) -> bool:
        """Whether all three messages have been processed."""
        return self._step == len(_PATTERN)

    @property
    def handshake_hash(self) -> bytes:
        """The transcript hash ``h``; equal on both sides of a finished handshake."""
        return self._h

    def _mix_hash(self, data: bytes) -> None:
        self._h = hashlib.sha256(self._h + data).digest()

    def _mix_key(self, material: bytes) -> None:
        self._ck, key = _hkdf(self._ck, material)
        self._k, self._n = ChaCha20Poly1305(key), 0

    def _encrypt_and_hash(self, plaintext: bytes) -> bytes:
        data = plaintext
        if self._k is not None:
            data = self._k.encrypt(pack_nonce(self._n), plaintext, self._h)
            self._n += 1
        self._mix_hash(data)
        return data

    def _decrypt_and_hash(self, data: bytes) -> bytes:
        plaintext = data
        if self._k is not None:
            try:
                plaintext = self._k.decrypt(pack_nonce(self._n), data, self._h)
            except InvalidTag:
                raise NoiseError("a handshake message failed authentication") from None
            self._n += 1
        self._mix_hash(data)
        return plaintext

    def _dh_token(self, token: str) -> bytes:
        assert self._e is not None
        # "es" is DH(initiator's e, responder's s); "se" the other way round.
        if token == "ee":
            return _dh(self._e, self._re)
        mine_ephemeral = (token == "es") == self.initiator
        if mine_ephemeral:
            return _dh(self._e, self.remote_static)
        return _dh(self._s, self._re)

    def _my_turn(self) -> bool:
        return (self._step % 2 == 0) == self.initiator

    def write_message(self, payload: bytes) -> bytes:
        """The next handshake message, carrying ``payload`` (encrypted from message 2 on)."""
        if self.finished or not self._my_turn():
            raise NoiseError("write_message out of turn")
        out: list[bytes] = []
        for token in _PATTERN[self._step]:
            if token == "e":
                self._e = X25519PrivateKey.generate()
                ephemeral = public_bytes(self._e)
                self._mix_hash(ephemeral)
                out.append(ephemeral)
            elif token == "s":
                out.append(self._encrypt_and_hash(public_bytes(self._s)))
            else:
                self._mix_key(self._dh_token(token))
        out.append(self._encrypt_and_hash(payload))
        self._step += 1
        message = b"".join(out)
        if len(message) > MAX_MESSAGE:
            raise NoiseError(f"a handshake message may not exceed {MAX_MESSAGE} bytes")
        return message

    def read_message(self, message: bytes) -> bytes:
        """Process the peer's next handshake message; returns its payload."""
        if self.finished or self._my_turn():
            raise NoiseError("read_message out of turn")
        if len(message) > MAX_MESSAGE:
            raise NoiseError(f"a handshake message of {len(message)} bytes is over the "
                             f"Noise maximum of {MAX_MESSAGE}")
        message = bytes(message)  # key parsers take bytes only, not other buffers
        offset = 0
        for token in _PATTERN[self._step]:
            if token == "e":
                self._re = message[offset : offset + DHLEN]
                if len(self._re) != DHLEN:
                    raise NoiseError("a handshake message is too short for an ephemeral key")
                offset += DHLEN
                self._mix_hash(self._re)
            elif token == "s":
                size = DHLEN + (TAGLEN if self._k is not None else 0)
                if len(message) - offset < size:
                    raise NoiseError("a handshake message is too short for a static key")
                self.remote_static = self._decrypt_and_hash(message[offset : offset + size])
                offset += size
            else:
                self._mix_key(self._dh_token(token))
        if self._k is not None and len(message) - offset < TAGLEN:
            raise NoiseError("a handshake message is too short for its payload")
        payload = self._decrypt_and_hash(message[offset:])
        self._step += 1
        return payload

    def split(self) -> tuple[ChaCha20Poly1305, ChaCha20Poly1305]:
        """``(send, receive)`` transport ciphers of this side, nonces starting at 0."""
        if not self.finished:
            raise NoiseError("split before the handshake finished")
        first, second = _hkdf(self._ck, b"")
        to_responder, to_initiator = ChaCha20Poly1305(first), ChaCha20Poly1305(second)
        if self.initiator:
            return to_responder, to_initiator
        return to_initiator, to_responder
