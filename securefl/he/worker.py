"""An HE encryption worker: `python -m securefl.he.worker`, started by `pool.EncryptionPool`.

It is a fresh interpreter running this module only, so nothing of the program that uses
securefl is imported or run again (unlike multiprocessing's spawn and forkserver children,
which re-import the caller's `__main__`). It speaks length-prefixed frames on stdin/stdout:

* `K` fingerprint context  — load a public context (never a secret key: `load_public_context`
  refuses one) and keep it under its SHA-256 fingerprint;
* `E` fingerprint scheme slots values — encrypt `values` (little-endian float64 for ckks,
  uint64 for bfv) in ciphertexts of `slots` values under that context;

and answers each with `O` count (length ciphertext)*, or `X` and a message. It exits when its
stdin closes, so it never outlives the process that started it."""

from __future__ import annotations

import struct
import sys
from collections import OrderedDict
from typing import BinaryIO

import numpy as np

LOAD, ENCRYPT, OK, FAILED = b"K", b"E", b"O", b"X"
SCHEME_CODES = {"ckks": b"c", "bfv": b"b"}
VALUE_DTYPES = {b"c": np.dtype("<f8"), b"b": np.dtype("<u8")}
FINGERPRINT_BYTES = 32
_CONTEXTS_KEPT = 4  # a few key epochs' contexts; each is ~0.3 MB


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


def _serve(requests: BinaryIO, replies: BinaryIO) -> None:
    from .codec import CHUNK_ENCRYPTORS
    from .keys import load_public_context

    schemes = {code: name for name, code in SCHEME_CODES.items()}
    contexts: OrderedDict[bytes, object] = OrderedDict()
    while (frame := read_frame(requests)) is not None:
        op, fingerprint, body = frame[:1], frame[1:1 + FINGERPRINT_BYTES], frame[1 + FINGERPRINT_BYTES:]
        try:
            if op == LOAD:
                contexts[fingerprint] = load_public_context(body)
                while len(contexts) > _CONTEXTS_KEPT:
                    contexts.popitem(last=False)
                write_frame(replies, OK, encode_chunks([]))
            elif op == ENCRYPT:
                context = contexts[fingerprint]
                contexts.move_to_end(fingerprint)
                scheme, (slots,) = body[:1], struct.unpack_from(">I", body, 1)
                values = np.frombuffer(body[5:], dtype=VALUE_DTYPES[scheme])
                write_frame(replies, OK, encode_chunks(CHUNK_ENCRYPTORS[schemes[scheme]](context, values, slots)))
            else:
                raise ValueError(f"unknown request {op!r}")
        except Exception as exc:  # reported to the caller, who raises it; the worker stays up
            write_frame(replies, FAILED, f"{type(exc).__name__}: {exc}".encode())


def main() -> None:
    requests, replies = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # stray prints must never corrupt the reply stream
    try:
        _serve(requests, replies)
    except (EOFError, BrokenPipeError, KeyboardInterrupt):
        pass


if __name__ == "__main__":
    main()
