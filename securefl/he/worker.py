"""An HE worker: `python -m securefl.he.worker [--decrypt]`, started by `pool.EncryptionPool`
or, in the key-holder, by `pool.DecryptionPool`.

It is a fresh interpreter running this module only, so nothing of the program that uses
securefl is imported or run again (unlike multiprocessing's spawn and forkserver children,
which re-import the caller's `__main__`). It speaks length-prefixed frames on stdin/stdout
(`frames.py`). An encryption worker (the default) answers

* `K` fingerprint context  — load a public context (never a secret key: `load_public_context`
  refuses one) and keep it under its SHA-256 fingerprint;
* `E` fingerprint scheme slots values — encrypt `values` (little-endian float64 for ckks,
  uint64 for bfv) in ciphertexts of `slots` values under that context;

and a decryption worker (`--decrypt`) only

* `D` scheme (secret context, ciphertext*) — decrypt the ciphertexts under the secret context
  that comes with them, answer the slots (float64 for ckks, int64 for bfv), and drop the
  context: it keeps no key between requests.

Each answer is `O` count (length chunk)*, or `X` and a message. The worker exits when its stdin
closes, so it never outlives the process that started it. Nothing in securefl imports this
module, so `python -m` runs it fresh."""

from __future__ import annotations

import struct
import sys
from collections import OrderedDict
from typing import BinaryIO

import numpy as np

from .codec import CHUNK_ENCRYPTORS, decrypt_serialized
from .frames import (
    DECRYPT, DECRYPTED_DTYPES, ENCRYPT, FAILED, FINGERPRINT_BYTES, LOAD, OK, SCHEME_CODES, VALUE_DTYPES, decode_chunks,
    encode_chunks, read_frame, write_frame,
)
from .keys import load_public_context, load_secret_context

_CONTEXTS_KEPT = 4  # a few key epochs' public contexts; each is ~0.3 MB
_SCHEMES = {code: name for name, code in SCHEME_CODES.items()}


def _decrypt(request: bytes) -> bytes:
    code, (context, *chunks) = request[:1], decode_chunks(request[1:])
    secret_context = load_secret_context(context)
    slots = decrypt_serialized(secret_context, _SCHEMES[code], chunks)
    del secret_context  # no key outlives the request
    return encode_chunks([np.ascontiguousarray(slots, dtype=DECRYPTED_DTYPES[code]).tobytes()])


def _serve_decryption(requests: BinaryIO, replies: BinaryIO) -> None:
    while (frame := read_frame(requests)) is not None:
        try:
            if frame[:1] != DECRYPT:
                raise ValueError(f"a decryption worker only decrypts, not {frame[:1]!r}")
            write_frame(replies, OK, _decrypt(frame[1:]))
        except Exception as exc:  # reported to the caller, who decrypts in its own process
            write_frame(replies, FAILED, f"{type(exc).__name__}: {exc}".encode())


def _serve_encryption(requests: BinaryIO, replies: BinaryIO) -> None:
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
                write_frame(replies, OK, encode_chunks(CHUNK_ENCRYPTORS[_SCHEMES[scheme]](context, values, slots)))
            else:
                raise ValueError(f"unknown request {op!r}")
        except Exception as exc:  # reported to the caller, who raises it; the worker stays up
            write_frame(replies, FAILED, f"{type(exc).__name__}: {exc}".encode())


def main() -> None:
    requests, replies = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # stray prints must never corrupt the reply stream
    serve = _serve_decryption if sys.argv[1:] == ["--decrypt"] else _serve_encryption
    try:
        serve(requests, replies)
    except (EOFError, BrokenPipeError, KeyboardInterrupt):
        pass


if __name__ == "__main__":
    main()
