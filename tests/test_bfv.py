"""BFV preset, noise budget, packing codec and ciphertext validation (no transport)."""

import math

import numpy as np
import pytest
import tenseal as ts
import tenseal.sealapi as sealapi
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from securefl.errors import InvalidInput, MalformedCiphertext
from securefl.he.bfv import BfvCodec
from securefl.he.codec import decrypt_chunks, encrypt_bfv_chunks, parse_chunk
from securefl.he.epochs import EpochSettings
from securefl.he.keys import SecretContext, load_public_context
from securefl.he.masks import uniform_mod
from securefl.he.packing import PackingPlan, ReleaseCheckFailed
from securefl.he.pool import EncryptionPool
from securefl.he.presets import MAX_COEFF_BITS_128, get_preset

PRESET = get_preset("bfv-8192")
T = PRESET.plain_modulus
SLOTS = PRESET.slots


# -- preset ---------------------------------------------------------------------------------------

def test_bfv_preset_is_within_the_128_bit_bound_and_batches():
    assert sum(PRESET.coeff_mod_bit_sizes) <= MAX_COEFF_BITS_128[PRESET.poly_modulus_degree]
    assert T == sealapi.PlainModulus.Batching(SLOTS, 40).value()  # the largest 40-bit prime = 1 mod 2N
    assert T % (2 * SLOTS) == 1 and 2**39 < T < 2**40 and PRESET.packing_bits == 39


def test_generated_context_batches_and_its_public_half_has_only_the_public_key(secret):
    data = secret.context.seal_context().data.first_context_data()
    assert data.qualifiers().using_batching
    assert data.parms().plain_modulus().value() == T
    public = load_public_context(secret.public_bytes)
    assert public.has_public_key() and not public.has_relin_keys() and not public.has_galois_keys()


def test_a_ciphertext_carries_8192_values_in_131_kb(public):
    chunk = encrypt_bfv_chunks(public, np.arange(SLOTS, dtype=np.uint64), SLOTS)[0]
    assert 131_072 <= len(chunk) < 131_300


def test_sums_of_the_largest_client_count_keep_a_positive_noise_budget(public, secret):
    """Worst case: noise that grows linearly, as when one ciphertext is added to itself
    max_clients = 1024 times (independent honest noise grows far slower)."""
    values = np.random.default_rng(0).integers(0, T, SLOTS).astype(np.uint64)
    total = ts.bfv_vector_from(public, encrypt_bfv_chunks(public, values, SLOTS)[0])
    for _ in range(int(math.log2(PRESET.max_clients))):
        total.add_(total.copy())
    total.link_context(secret.context)
    decryptor = sealapi.Decryptor(secret.context.seal_context().data, secret.context.secret_key().data)
    assert decryptor.invariant_noise_budget(total.ciphertext()[0]) >= 1
    expected = (values.astype(object) * PRESET.max_clients) % T
    assert np.array_equal(np.mod(np.array(total.decrypt(), dtype=np.int64), T), expected.astype(np.int64))


def test_a_101_way_sum_of_fresh_ciphertexts_is_exact(public, secret):
    rng = np.random.default_rng(1)
    values = [rng.integers(0, T, SLOTS).astype(np.uint64) for _ in range(101)]
    total = parse_chunk(public, PRESET, encrypt_bfv_chunks(public, values[0], SLOTS)[0], SLOTS)
    for v in values[1:]:
        total.add_(parse_chunk(public, PRESET, encrypt_bfv_chunks(public, v, SLOTS)[0], SLOTS))
    expected = sum(v.astype(object) for v in values) % T
    assert np.array_equal(np.mod(decrypt_chunks(secret.context, [total]), T), expected.astype(np.int64))


# -- packing --------------------------------------------------------------------------------------

@pytest.mark.parametrize("clients, k_limits", [
    (2, {4: 8, 3: 12, 2: 18, 1: 38}), (4, {4: 7, 3: 11, 2: 17, 1: 37}), (8, {3: 10, 2: 16, 1: 36}),
    (16, {3: 9, 2: 15, 1: 35}), (32, {3: 8, 2: 14, 1: 34}), (64, {3: 7, 2: 13, 1: 33}), (128, {3: 6, 2: 12, 1: 32}),
    (256, {3: 5, 2: 11, 1: 31}), (512, {3: 4, 2: 10, 1: 30}), (1024, {2: 9, 1: 29}),
])
def test_documented_k_table(clients, k_limits):
    """The table in packing.py: the largest precision_bits for which each k is chosen."""
    for k, limit in k_limits.items():
        assert PackingPlan.choose(clients, limit, 1.0, 1.0, 39, SLOTS).values_per_slot == k
        if k > 1:
            assert PackingPlan.choose(clients, limit + 1, 1.0, 1.0, 39, SLOTS).values_per_slot < k
        else:
            with pytest.raises(InvalidInput):
                PackingPlan.choose(clients, limit + 1, 1.0, 1.0, 39, SLOTS)
    assert PackingPlan.choose(10, 12, 1.0, 1.0, 39, SLOTS).values_per_slot == 2  # the default at 10 clients
    assert PackingPlan.choose(10, 9, 1.0, 1.0, 39, SLOTS).values_per_slot == 3


def plan_for(k: int, clients: int, value_bound: float, max_weight: float) -> PackingPlan:
    precision = 39 // k - math.ceil(math.log2(clients))
    assume(precision >= 4)
    try:
        plan = PackingPlan.choose(clients, precision, value_bound, max_weight, 39, SLOTS)
    except InvalidInput:  # too few bits for any weight up to max_weight
        assume(False)
    assert plan.values_per_slot == k
    return plan


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(k=st.integers(1, 4), clients=st.integers(1, 64), length=st.integers(2, 3 * SLOTS + 5),
       value_bound=st.sampled_from([0.5, 1.0, 10.0]), max_weight=st.sampled_from([1.0, 7.0, 1000.0]), data=st.data())
def test_packed_sums_unpack_to_the_exact_sum_of_every_clients_fields(k, clients, length, value_bound, max_weight, data):
    plan = plan_for(k, clients, value_bound, max_weight)
    m = data.draw(st.integers(1, clients))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32)))
    extreme = data.draw(st.booleans())  # every value at ±bound and maximal weight: worst-case carries
    singles, total = [], np.zeros(plan.slots_used(length), dtype=np.uint64)
    for _ in range(m):
        if extreme:
            vector, weight = rng.choice([-2.0, 2.0], size=length - 1) * value_bound, max_weight
        else:
            vector = rng.normal(scale=value_bound, size=length - 1)
            weight = float(rng.uniform(1.0 / plan.scale, max_weight))
        packed = plan.encode(vector, weight)
        single = plan.unpack_sum(packed, 1, length)
        payload = np.append(np.clip(vector, -value_bound, value_bound) * weight, weight)
        assert np.abs(single - payload).max() < 1.0 / plan.scale  # one step of stochastic rounding
        singles.append(single)
        total += packed
    assert int(total.max()) < 2**39 < T  # never wraps modulo t
    np.testing.assert_array_equal(plan.unpack_sum(total, m, length), sum(singles))


@settings(max_examples=40, deadline=None)
@given(clients=st.integers(1, 2048), precision=st.integers(4, 39),
       value_bound=st.floats(1e-3, 1e3), max_weight=st.floats(1e-3, 1e6))
def test_every_accepted_plan_has_room_for_the_largest_sum(clients, precision, value_bound, max_weight):
    try:
        codec = EpochSettings("bfv", PRESET.name, clients, value_bound, max_weight, precision).codec()
    except InvalidInput:  # only for a reason: too many clients, no room, or no weight representable
        headroom = math.ceil(math.log2(clients))
        fitting = [k for k in range(1, 40) if 39 // k - headroom >= precision]
        if clients <= PRESET.max_clients and fitting:
            offset = 2 ** (39 // max(fitting) - headroom - 1) - 1
            assert max_weight * 2.0 ** math.floor(math.log2(offset / (max(value_bound, 1.0) * max_weight))) < 1
        return
    plan = codec.plan
    assert plan.client_bits >= precision and plan.values_per_slot * plan.field_bits <= 39
    assert clients * 2 * plan.offset < 2**plan.field_bits  # no carry between fields
    assert max(value_bound, 1.0) * max_weight * plan.scale <= plan.offset  # every client value fits


def test_configurations_that_could_overflow_are_refused_before_any_key_exists(tmp_path):
    from securefl.he.keystore import KeyStore

    with pytest.raises(InvalidInput, match="headroom"):
        EpochSettings("bfv", PRESET.name, 1000, 1.0, 1.0, precision_bits=30).codec()
    with pytest.raises(InvalidInput, match="noise budget"):
        EpochSettings("bfv", PRESET.name, 2000, 1.0, 1.0, precision_bits=8).codec()
    with pytest.raises(InvalidInput):
        KeyStore.create(tmp_path / "ks.bin", "pw", EpochSettings("bfv", PRESET.name, 1000, 1.0, 1.0, 30))
    assert not (tmp_path / "ks.bin").exists()


@pytest.mark.parametrize("vector, weight, message", [
    (np.ones(4), 11.0, "outside"), (np.ones(4), 0.0, "outside"), (np.array([1.0, np.nan]), 1.0, "NaN"),
    (np.array([np.inf, 1.0]), 1.0, "NaN"), (np.ones(4), 2.0**-20, "resolution"),
])
def test_a_client_refuses_an_update_that_could_break_the_sum_before_encrypting(vector, weight, message):
    plan = PackingPlan.choose(4, 12, 4.0, 10.0, 39, SLOTS)
    with pytest.raises(InvalidInput, match=message):
        plan.encode(vector, weight)


def test_unpacking_refuses_fields_an_honest_sum_cannot_have():
    plan = PackingPlan.choose(4, 12, 1.0, 10.0, 39, SLOTS)
    honest = plan.encode(np.zeros(10), 1.0) + plan.encode(np.zeros(10), 1.0)
    plan.unpack_sum(honest, 2, 11)
    for tamper in (lambda p: p.__setitem__(0, p[0] + (1 << 38)),  # top bits
                   lambda p: p.__setitem__(50, p[50] + 1),  # a padding field
                   lambda p: p.__setitem__(3, p[3] + 5 * plan.offset)):  # a value beyond the weight sum
        tampered = honest.copy()
        tamper(tampered)
        with pytest.raises(ReleaseCheckFailed):
            plan.unpack_sum(tampered, 2, 11)
    with pytest.raises(ReleaseCheckFailed):  # the same slots claimed as the sum of 3 clients
        plan.unpack_sum(honest, 3, 11)


# -- masks and codec ------------------------------------------------------------------------------

def test_masks_are_uniform_modulo_t_and_a_pure_function_of_the_seed():
    seed = bytes(range(32))
    mask = uniform_mod(seed, 200_000, T)
    assert np.array_equal(mask, uniform_mod(seed, 200_000, T))
    assert mask.max() < T and abs(mask.mean() / T - 0.5) < 0.005
    assert np.array_equal(uniform_mod(seed, 1000, T), mask[:1000])


def test_rejection_sampling_keeps_only_values_below_the_modulus():
    modulus = 2**20 + 1  # nearly half the 21-bit candidates are rejected
    values = uniform_mod(bytes(32), 50_000, modulus)
    assert values.max() < modulus and values.size == 50_000
    assert abs(values.mean() / modulus - 0.5) < 0.01


def test_masked_plaintext_unmasks_and_unpacks(public, secret):
    codec = EpochSettings("bfv", PRESET.name, 3, 2.0, 5.0).codec()
    assert isinstance(codec, BfvCodec)
    x, seed = np.linspace(-1, 1, 100), bytes([7]) * 32
    masked = codec.masked_plaintext(x, 2.0, seed)
    assert masked.size == SLOTS and masked.max() < T
    chunks = [codec.parse_chunk(public, c) for c in codec.protect(public, x, 2.0, seed)]
    total = codec.reveal(decrypt_chunks(secret.context, chunks), [seed], 101)
    np.testing.assert_allclose(total, np.append(2.0 * x, 2.0), atol=1.0 / codec.plan.scale)


def test_pool_encryption_matches_inline_encryption(secret):
    values = np.random.default_rng(2).integers(0, T, 10 * SLOTS).astype(np.uint64)
    pool = EncryptionPool(secret.public_bytes, workers=2)
    try:
        chunks = pool.encrypt(values, SLOTS, encrypt_bfv_chunks)
    finally:
        pool.shutdown()
    public = load_public_context(secret.public_bytes)
    parsed = [parse_chunk(public, PRESET, c, SLOTS) for c in chunks]
    assert np.array_equal(np.mod(decrypt_chunks(secret.context, parsed), T), values.astype(np.int64))


def test_garbage_short_and_foreign_chunks_are_refused(public, secret):
    chunk = encrypt_bfv_chunks(public, np.zeros(SLOTS, dtype=np.uint64), SLOTS)[0]
    for bad in (b"\x00" * 500, chunk[: len(chunk) // 2]):
        with pytest.raises(MalformedCiphertext):
            parse_chunk(public, PRESET, bad, SLOTS)
    with pytest.raises(MalformedCiphertext, match="expected 8192"):
        parse_chunk(public, PRESET, ts.bfv_vector(public, [1, 2, 3]).serialize(), SLOTS)
    ckks = SecretContext.generate(get_preset("add-only-8192"))
    with pytest.raises(MalformedCiphertext):
        parse_chunk(public, PRESET, ts.ckks_vector(load_public_context(ckks.public_bytes), [1.0] * 10).serialize(), SLOTS)


def test_a_product_ciphertext_of_three_polynomials_is_refused(secret):
    context = secret.context
    context.auto_relin = False
    try:
        product = ts.bfv_vector(context, [1] * SLOTS)
        product.mul_(ts.bfv_vector(context, [2] * SLOTS))
        assert product.ciphertext()[0].size() == 3
        with pytest.raises(MalformedCiphertext, match="fresh"):
            parse_chunk(load_public_context(secret.public_bytes), PRESET, product.serialize(), SLOTS)
    finally:
        context.auto_relin = True
