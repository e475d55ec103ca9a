"""The digest a receipt signs: the hash the aggregator's session names, SHA-256 when it names none."""

from __future__ import annotations

import hashlib
import struct

import blake3
import pytest

from securefl.errors import InvalidInput
from securefl.rounds.chunks import BLAKE3, SHA256, ChunkDigest, receipt_digest_of

CHUNKS = [b"\x01" * 5, b"\x02" * 3, b""]


def framed(chunks: list[bytes]) -> bytes:
    return b"".join(struct.pack(">II", i, len(c)) + c for i, c in enumerate(chunks))


def test_sha256_digests_are_those_of_aggregators_that_name_no_digest():
    """Byte for byte the digest of aggregators before `Session.receipt_digest`, which clients
    still submit to."""
    assert receipt_digest_of("") == SHA256
    assert ChunkDigest.of(CHUNKS, SHA256) == hashlib.sha256(b"securefl/chunks/v1" + framed(CHUNKS)).digest()


def test_blake3_digests_are_domain_separated_and_bind_order_and_boundaries():
    assert receipt_digest_of(BLAKE3) == BLAKE3
    assert ChunkDigest.of(CHUNKS) == blake3.blake3(b"securefl/chunks/blake3/v1" + framed(CHUNKS)).digest()
    assert ChunkDigest.of(CHUNKS) != ChunkDigest.of(CHUNKS, SHA256)
    assert ChunkDigest.of(CHUNKS) != ChunkDigest.of([CHUNKS[1], CHUNKS[0], CHUNKS[2]])
    assert ChunkDigest.of(CHUNKS) != ChunkDigest.of([CHUNKS[0] + CHUNKS[1][:1], CHUNKS[1][1:], CHUNKS[2]])


@pytest.mark.parametrize("announced", ["md5", "SHA256", "blake3 "])
def test_a_digest_this_securefl_does_not_know_is_refused_naming_the_fix(announced):
    with pytest.raises(InvalidInput, match="upgrade securefl"):
        receipt_digest_of(announced)
    with pytest.raises(InvalidInput, match="unknown receipt digest"):
        ChunkDigest(announced)
