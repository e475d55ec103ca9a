"""Chunked CKKS encryption of a flat vector, validation of received chunks, decryption.

Chunk i holds values [i·slots, (i+1)·slots): every slot is filled, with no per-layer padding,
so a vector of L values costs ceil(L / slots) ciphertexts."""

from __future__ import annotations

import numpy as np
import tenseal as ts

from ..errors import MalformedCiphertext
from .presets import CkksPreset


def encrypt_chunks(context: ts.Context, vector: np.ndarray, slots: int) -> list[bytes]:
    """Encrypt `vector` as consecutive full ciphertexts under the public `context`."""
    return [
        ts.ckks_vector(context, vector[start:start + slots].tolist()).serialize()
        for start in range(0, vector.size, slots)
    ]


def parse_chunk(context: ts.Context, preset: CkksPreset, data: bytes, expected_values: int) -> ts.CKKSVector:
    """Deserialize an untrusted chunk and check it is a fresh ciphertext of this context
    holding `expected_values` values at the preset's scale, so that adding it cannot fail
    or silently misalign the sum."""
    try:
        vector = ts.ckks_vector_from(context, data)
    except Exception:
        raise MalformedCiphertext("chunk is not a CKKS ciphertext of this round's parameters") from None
    if vector.size() != expected_values:
        raise MalformedCiphertext(f"chunk holds {vector.size()} values, expected {expected_values}")
    ciphertexts = vector.ciphertext()
    if len(ciphertexts) != 1:
        raise MalformedCiphertext("chunk must be exactly one ciphertext")
    ciphertext = ciphertexts[0]
    if (
        ciphertext.size() != 2
        or ciphertext.scale != 2.0**preset.scale_bits
        or ciphertext.coeff_modulus_size() != len(preset.coeff_mod_bit_sizes) - 1
        or ciphertext.is_transparent()
    ):
        raise MalformedCiphertext("chunk is not a fresh ciphertext at the round's CKKS level and scale")
    return vector


def decrypt_chunks(secret_context: ts.Context, chunks: list[ts.CKKSVector]) -> np.ndarray:
    """Decrypt parsed aggregate chunks (linked to the secret context) into one float64 vector."""
    parts = []
    for chunk in chunks:
        chunk.link_context(secret_context)
        parts.append(np.asarray(chunk.decrypt(), dtype=np.float64))
    return np.concatenate(parts) if parts else np.zeros(0)
