"""The frames HE workers speak (`worker.py`, `pool.py`): 8-byte big-endian length, then the
payload. Encryption requests: `K` fingerprint context (load a public context), `E` fingerprint
scheme slots values (encrypt). Decryption request: `D` scheme (secret context, ciphertext*) as
chunks. Replies: `O` count (length chunk)*, or `X` message."""

from __future__ import annotations

import struct
from typing import BinaryIO

import numpy as np

LOAD, ENCRYPT, DECRYPT, OK, FAILED = b"K", b"E", b"D", b"O", b"X"
SCHEME_CODES = {"ckks": b"c", "bfv": b"b"}
VALUE_DTYPES = {b"c": np.dtype("<f8"), b"b": np.dtype("<u8")}  # what is encrypted
DECRYPTED_DTYPES = {b"c": np.dtype("<f8"), b"b": np.dtype("<i8")}  # what decryption gives
FINGERPRINT_BYTES = 32


def write_frame(stream: BinaryIO, *parts: bytes) -> None:
    stream.write(struct.pack(">Q", sum(len(p) for p in parts)))
    for part in parts:
        stream.write(part)
    stream.flush()


def read_frame(stream: BinaryIO) -> bytes | None:
    """The next frame's payload; None at a clean end of the stream."""
    header = stream.read(8)
    if not header:
        return None
    if len(header) != 8:
        raise EOFError("truncated frame header")
    (length,) = struct.unpack(">Q", header)
    payload = stream.read(length)
    if len(payload) != length:
        raise EOFError("truncated frame")
    return payload


def encode_chunks(chunks: list[bytes]) -> bytes:
    return struct.pack(">I", len(chunks)) + b"".join(struct.pack(">Q", len(c)) + c for c in chunks)


def decode_chunks(payload: bytes) -> list[bytes]:
    (count,) = struct.unpack_from(">I", payload)
    chunks, offset = [], 4
    for _ in range(count):
        (length,) = struct.unpack_from(">Q", payload, offset)
        chunks.append(payload[offset + 8:offset + 8 + length])
        offset += 8 + length
    return chunks
