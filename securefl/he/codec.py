"""Chunked HE encryption of a flat vector, validation of received chunks, decryption; CKKS
(real values) and BFV (integers modulo the plaintext prime, batched).

Chunk i holds values [i·slots, (i+1)·slots): every slot is filled, with no per-layer padding,
so a vector of L values costs ceil(L / slots) ciphertexts."""

from __future__ import annotations

import numpy as np
import tenseal as ts

from ..errors import MalformedCiphertext
from .presets import BfvPreset, Preset

HEVector = ts.CKKSVector | ts.BFVVector


def encrypt_chunks(context: ts.Context, vector: np.ndarray, slots: int) -> list[bytes]:
    """CKKS-encrypt `vector` as consecutive full ciphertexts under the public `context`."""
    return [
        ts.ckks_vector(context, vector[start:start + slots].tolist()).serialize()
        for start in range(0, vector.size, slots)
    ]


def encrypt_bfv_chunks(context: ts.Context, vector: np.ndarray, slots: int) -> list[bytes]:
    """BFV-encrypt integers in [0, t) (batched: one value per slot) as consecutive ciphertexts."""
    return [
        ts.bfv_vector(context, vector[start:start + slots].tolist()).serialize()
        for start in range(0, vector.size, slots)
    ]


CHUNK_ENCRYPTORS = {"ckks": encrypt_chunks, "bfv": encrypt_bfv_chunks}
_CHUNK_LOADERS = {"ckks": ts.ckks_vector_from, "bfv": ts.bfv_vector_from}


def parse_chunk(context: ts.Context, preset: Preset, data: bytes, expected_values: int) -> HEVector:
    """Deserialize an untrusted chunk and check it is a fresh ciphertext of this context
    holding `expected_values` values (at the preset's scale, for CKKS), so that adding it
    cannot fail or silently misalign the sum. SEAL's loader refuses coefficients >= q."""
    bfv = isinstance(preset, BfvPreset)
    try:
        vector = ts.bfv_vector_from(context, data) if bfv else ts.ckks_vector_from(context, data)
    except Exception:
        raise MalformedCiphertext(f"chunk is not a {preset.scheme.upper()} ciphertext of this round's parameters") from None
    if vector.size() != expected_values:
        raise MalformedCiphertext(f"chunk holds {vector.size()} values, expected {expected_values}")
    ciphertexts = vector.ciphertext()
    if len(ciphertexts) != 1:
        raise MalformedCiphertext("chunk must be exactly one ciphertext")
    ciphertext = ciphertexts[0]
    if (
        ciphertext.size() != 2
        or ciphertext.coeff_modulus_size() != preset.data_primes
        or ciphertext.is_transparent()
        or ciphertext.is_ntt_form() == bfv  # SEAL keeps CKKS ciphertexts in NTT form, BFV ones not
        or (not bfv and ciphertext.scale != 2.0**preset.scale_bits)
    ):
        raise MalformedCiphertext(f"chunk is not a fresh ciphertext at the round's {preset.scheme.upper()} level and scale")
    return vector


def decrypt_chunks(secret_context: ts.Context, chunks: list[HEVector]) -> np.ndarray:
    """Decrypt parsed aggregate chunks (linked to the secret context) into one vector: float64
    for CKKS, int64 for BFV (SEAL returns slots in (-t/2, t/2])."""
    parts = []
    for chunk in chunks:
        chunk.link_context(secret_context)
        dtype = np.int64 if isinstance(chunk, ts.BFVVector) else np.float64
        parts.append(np.asarray(chunk.decrypt(), dtype=dtype))
    return np.concatenate(parts) if parts else np.zeros(0)


def decrypt_serialized(secret_context: ts.Context, scheme: str, chunks: list[bytes]) -> np.ndarray:
    """`decrypt_chunks` of serialized chunks that the caller has already validated (`parse_chunk`)."""
    return decrypt_chunks(secret_context, [_CHUNK_LOADERS[scheme](secret_context, chunk) for chunk in chunks])
