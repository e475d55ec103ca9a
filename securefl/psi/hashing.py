"""Hash-to-group for ristretto255 (RFC 9380, section 5.3.1 expand_message_xmd with SHA-512;
RFC 9496 one-way map), with a domain-separation tag per PSI session."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import rbcl

HASH_TO_GROUP_BYTES = 64  # the ristretto255 one-way map takes 64 uniform bytes


def expand_message_xmd(message: bytes, dst: bytes, length: int, hash_name: str = "sha512") -> bytes:
    """RFC 9380 expand_message_xmd."""
    return XmdExpander(dst, length, hash_name)(message)


class XmdExpander:
    """expand_message_xmd with the DST and length fixed, so the constant prefix is hashed once
    and copied per message."""

    def __init__(self, dst: bytes, length: int, hash_name: str = "sha512") -> None:
        if not 0 < len(dst) <= 255:
            raise ValueError("a domain-separation tag has 1 to 255 bytes")
        self._new: Callable = getattr(hashlib, hash_name)
        probe = self._new()
        out_bytes, block_bytes = probe.digest_size, probe.block_size
        self._blocks = -(-length // out_bytes)
        if self._blocks > 255 or length > 65535:
            raise ValueError("requested length is too long for expand_message_xmd")
        self._length = length
        self._dst_prime = dst + bytes([len(dst)])
        self._prefix = self._new(bytes(block_bytes))  # Z_pad
        self._suffix = length.to_bytes(2, "big") + b"\x00" + self._dst_prime

    def __call__(self, message: bytes) -> bytes:
        state = self._prefix.copy()
        state.update(message)
        state.update(self._suffix)
        b0 = state.digest()
        previous = self._new(b0 + b"\x01" + self._dst_prime).digest()
        output = [previous]
        for i in range(2, self._blocks + 1):
            previous = self._new(bytes(x ^ y for x, y in zip(b0, previous)) + bytes([i]) + self._dst_prime).digest()
            output.append(previous)
        return b"".join(output)[: self._length]


def session_dst(session_id: bytes) -> bytes:
    return b"securefl-psi-v1-ristretto255_XMD:SHA-512_R255MAP_RO_" + session_id.hex().encode()


def hash_to_group(item: bytes, expander: XmdExpander) -> bytes:
    """RFC 9380 hash_to_ristretto255: 64 uniform bytes through the one-way map."""
    return rbcl.crypto_core_ristretto255_from_hash(expander(item))
