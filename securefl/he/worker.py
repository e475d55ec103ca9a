"""An HE encryption worker: `python -m securefl.he.worker`, started by `pool.EncryptionPool`.

It is a fresh interpreter running this module only, so nothing of the program that uses
securefl is imported or run again (unlike multiprocessing's spawn and forkserver children,
which re-import the caller's `__main__`). It speaks length-prefixed frames on stdin/stdout:

* `K` fingerprint context  — load a public context (never a secret key: `load_public_context`
  refuses one) and keep it under its SHA-256 fingerprint;
* `E` fingerprint scheme slots values — encrypt `values` (little-endian float64 for ckks,
  uint64 for bfv) in ciphertexts of `slots` values under that context;

and answers each with `O` count (length ciphertext)*, or `X` and a message (`frames.py`). It
exits when its stdin closes, so it never outlives the process that started it. Nothing in
securefl imports this module, so `python -m` runs it fresh."""

from __future__ import annotations

import struct
import sys
from collections import OrderedDict
from typing import BinaryIO

import numpy as np

from .codec import CHUNK_ENCRYPTORS
from .frames import (
    ENCRYPT, FAILED, FINGERPRINT_BYTES, LOAD, OK, SCHEME_CODES, VALUE_DTYPES, encode_chunks, read_frame, write_frame,
)
from .keys import load_public_context

_CONTEXTS_KEPT = 4  # a few key epochs' contexts; each is ~0.3 MB


def _serve(requests: BinaryIO, replies: BinaryIO) -> None:
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
