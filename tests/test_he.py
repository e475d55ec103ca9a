import pickle

import numpy as np
import pytest
import tenseal as ts

from securefl.errors import InvalidInput, MalformedCiphertext
from securefl.he.codec import decrypt_chunks, encrypt_chunks, parse_chunk
from securefl.he.keys import fingerprint, load_public_context
from securefl.he.pool import EncryptionPool
from securefl.he.presets import MAX_COEFF_BITS_128, PRESETS, CkksPreset, get_preset
from securefl.rounds.chunks import chunk_count, chunk_length

PRESET = get_preset("add-only-4096")  # the smallest ring keeps these tests fast


@pytest.mark.parametrize("preset", PRESETS.values(), ids=PRESETS.keys())
def test_every_preset_is_within_the_128_bit_bound(preset):
    assert sum(preset.coeff_mod_bit_sizes) <= MAX_COEFF_BITS_128[preset.poly_modulus_degree]
    preset.check_security()


def test_a_preset_beyond_the_security_bound_is_refused():
    with pytest.raises(InvalidInput, match="128-bit bound"):
        CkksPreset("too-big", 4096, (60, 60), 30).check_security()


def test_add_only_presets_expand_far_less_than_the_common_chain(public, secret):
    add_only = len(encrypt_chunks(public, np.zeros(PRESET.slots), PRESET.slots)[0]) / PRESET.slots
    assert 32 <= add_only < 32.2  # bytes per value: 8x float32


def test_public_context_carries_no_secret_key(secret):
    context = ts.context_from(secret.public_bytes)
    assert not context.is_private()
    assert load_public_context(secret.public_bytes).has_public_key()


def test_a_context_with_a_secret_key_is_refused_where_only_public_ones_belong(secret):
    with pytest.raises(InvalidInput, match="secret key"):
        load_public_context(secret.context.serialize(save_secret_key=True))


def test_secret_material_cannot_be_pickled_or_shown(secret):
    with pytest.raises(TypeError):
        pickle.dumps(secret)
    assert "fingerprint" in repr(secret) and secret.public_bytes.hex()[:32] not in repr(secret)


def test_chunks_fill_every_slot_and_decrypt_to_the_sum(public, secret, rng):
    length = 3 * PRESET.slots + 17
    a, b = rng.normal(size=length), rng.normal(size=length)
    chunks_a = encrypt_chunks(public, a, PRESET.slots)
    assert len(chunks_a) == chunk_count(length, PRESET.slots) == 4
    parsed_a = [parse_chunk(public, PRESET, c, chunk_length(i, length, PRESET.slots)) for i, c in enumerate(chunks_a)]
    for total, chunk in zip(parsed_a, encrypt_chunks(public, b, PRESET.slots)):
        total.add_(ts.ckks_vector_from(public, chunk))
    np.testing.assert_allclose(decrypt_chunks(secret.context, parsed_a), a + b, atol=1e-5)


def test_garbage_and_mis_sized_chunks_are_refused(public):
    chunk = encrypt_chunks(public, np.ones(10), PRESET.slots)[0]
    with pytest.raises(MalformedCiphertext):
        parse_chunk(public, PRESET, b"\x00" * 500, 10)
    with pytest.raises(MalformedCiphertext):
        parse_chunk(public, PRESET, chunk[: len(chunk) // 2], 10)
    with pytest.raises(MalformedCiphertext, match="expected 11"):
        parse_chunk(public, PRESET, chunk, 11)


def test_a_chunk_at_another_scale_is_refused(public):
    off_scale = ts.ckks_vector(public, [1.0, 2.0], scale=2.0**20).serialize()
    with pytest.raises(MalformedCiphertext, match="scale"):
        parse_chunk(public, PRESET, off_scale, 2)


def test_pool_encryption_matches_inline_encryption(secret, rng):
    vector = rng.normal(size=10 * PRESET.slots + 5)
    pool = EncryptionPool(workers=2)
    try:
        chunks = pool.encrypt(secret.public_bytes, vector, PRESET.slots, "ckks")
    finally:
        pool.shutdown()
    public = load_public_context(secret.public_bytes)
    parsed = [parse_chunk(public, PRESET, c, chunk_length(i, vector.size, PRESET.slots)) for i, c in enumerate(chunks)]
    np.testing.assert_allclose(decrypt_chunks(secret.context, parsed), vector, atol=1e-5)


def test_fingerprint_is_sha256_of_the_public_context(secret):
    assert secret.fingerprint == fingerprint(secret.public_bytes) and len(secret.fingerprint) == 32
